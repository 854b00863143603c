"""Greedy and beam-search decoding for any autoregressive decoder with an incremental state.

A model that decodes implements three methods (the encoder-decoder Transformer and the RNN
encoder-decoder both do, so neither copies a search loop):

    state = model.init_state(src, src_pad)        # encode once; per-row decoder state (caches)
    logits = model.decode_step(state, tokens)     # tokens (B,) -> next-token logits (B, V); updates state
    model.reorder_state(state, index)             # keep rows ``index`` (beam search)

and inherits ``generate`` (greedy or beam search, in eval mode) from :class:`Seq2SeqDecoder`.

CTC models (Graves et al. 2006) decode their per-frame log-probabilities instead:
:func:`ctc_greedy_decode` (best path: argmax per frame, merge repeats, drop blanks) and
:func:`ctc_beam_search` (prefix beam search, which sums the probabilities of all paths of a prefix).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _long_run_check(step: int) -> bool:
    """Whether a decoding looks, after ``step``, whether every row has ended: only a long one, after
    steps 63, 127, 255, ... (so at most twice the steps needed). Up to 64 steps the host queues them
    all without waiting; the one read-back is the length to keep, at the end."""
    return step >= 63 and step & (step + 1) == 0


def _mark_end(ended_at: Tensor, all_done: Tensor, step: int) -> Tensor:
    """The step count after which every row had ended (``max_len`` while some row runs), on the device."""
    return torch.where(all_done & (ended_at > step + 1), step + 1, ended_at)


@torch.no_grad()
def greedy_decode(model, src: Tensor, src_pad: Tensor | None, max_len: int, bos: int, eos: int,
                  pad: int = 0) -> Tensor:
    """(B, S) -> (B, L <= max_len) tokens after BOS; PAD after each row's EOS."""
    B = src.shape[0]
    state = model.init_state(src, src_pad)
    tokens = torch.full((B,), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    ended_at = torch.full((), max_len, device=src.device)  # a fill on the device, not a copy from the host
    out = []
    for step in range(max_len):  # a row that has ended only adds PAD, cut off below
        tokens = model.decode_step(state, tokens).argmax(-1)
        tokens = tokens.masked_fill(done, pad)
        out.append(tokens)
        done |= tokens == eos
        ended_at = _mark_end(ended_at, done.all(), step)
        if _long_run_check(step) and int(ended_at) <= step + 1:
            break
    return torch.stack(out, dim=1)[:, :int(ended_at)] if out else tokens.new_empty(B, 0)


@torch.no_grad()
def beam_search(model, src: Tensor, src_pad: Tensor | None, max_len: int, bos: int, eos: int,
                beam_size: int = 4, length_penalty: float = 0.6, pad: int = 0) -> Tensor:
    """The best of ``beam_size`` hypotheses per row, scored by log-probability / lp(length), with the
    GNMT length penalty lp(n) = ((5 + n) / 6) ** alpha. Returns (B, L) like ``greedy_decode``."""
    B, K, device = src.shape[0], beam_size, src.device
    state = model.init_state(src, src_pad)  # encode once, then K copies of every row's state
    model.reorder_state(state, torch.arange(B, device=device).repeat_interleave(K))
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # only the first copy is live at the start
    tokens = torch.full((B * K,), bos, dtype=torch.long, device=device)
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    history = torch.empty(B, K, 0, dtype=torch.long, device=device)
    lengths = torch.zeros(B, K, device=device)
    ended_at = torch.full((), max_len, device=device)
    for step in range(max_len):  # an ended hypothesis only adds PAD, cut off below
        logp = model.decode_step(state, tokens).float().log_softmax(-1)  # (B*K, V)
        V = logp.shape[-1]
        logp = logp.view(B, K, V)
        # a finished hypothesis only extends with PAD, at no cost
        stay = torch.full((V,), float("-inf"), device=device)
        stay[pad] = 0.0
        logp = torch.where(finished[..., None], stay, logp)
        total = (scores[..., None] + logp).view(B, K * V)
        new_len = lengths[..., None] + (~finished[..., None]).float()  # (B, K, 1)
        penalty = ((5.0 + new_len.expand(B, K, V)) / 6.0) ** length_penalty
        ranked = (total / penalty.reshape(B, K * V)).topk(K, dim=-1).indices  # (B, K)
        beam, token = ranked // V, ranked % V
        scores = total.gather(1, ranked)
        finished = finished.gather(1, beam) | (token == eos)
        lengths = new_len.squeeze(-1).gather(1, beam)
        history = torch.cat([history.gather(1, beam[..., None].expand(-1, -1, history.shape[2])),
                             token[..., None]], dim=2)
        rows = (torch.arange(B, device=device)[:, None] * K + beam).reshape(-1)
        model.reorder_state(state, rows)
        tokens = token.reshape(-1)
        ended_at = _mark_end(ended_at, finished.all(), step)
        if _long_run_check(step) and int(ended_at) <= step + 1:
            break
    best = (scores / ((5.0 + lengths) / 6.0) ** length_penalty).argmax(-1)  # (B,)
    return history[torch.arange(B, device=device), best][:, :int(ended_at)]


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """(B, V) -> (B, 1): argmax at temperature 0, else a sample of softmax(logits / temperature)
    restricted to the ``top_k`` largest logits (GPT's and the LSTM LM's sampling rule)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


class Seq2SeqDecoder:
    """Mixin for encoder-decoder models with ``pad_id``, ``bos_id``, ``eos_id`` and the three methods
    above: ``generate`` decodes in eval mode and restores the training mode after."""

    pad_id: int
    bos_id: int
    eos_id: int

    def generate(self, src: Tensor, src_pad: Tensor | None, max_len: int, beam_size: int = 1,
                 length_penalty: float = 0.6) -> Tensor:
        """Decode (B, S) -> (B, L) target tokens (without BOS; PAD after EOS)."""
        was_training = self.training
        self.eval()
        try:
            if beam_size == 1:
                return greedy_decode(self, src, src_pad, max_len, self.bos_id, self.eos_id, self.pad_id)
            return beam_search(self, src, src_pad, max_len, self.bos_id, self.eos_id, beam_size,
                               length_penalty, pad=self.pad_id)
        finally:
            self.train(was_training)


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path CTC decoding: log_probs (B, T, V), lengths (B,) -> one token list per row
    (the argmax of each real frame, repeats merged, then blanks removed)."""
    best = log_probs.argmax(-1).cpu()  # (B, T)
    T = best.shape[1]
    lengths = [T] * best.shape[0] if lengths is None else lengths.tolist()
    out = []
    for row, n in zip(best.tolist(), lengths):
        row = row[:n]
        out.append([t for i, t in enumerate(row) if t != blank and (i == 0 or t != row[i - 1])])
    return out


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def ctc_prefix_beam_search(log_probs: Tensor, beam_size: int = 4, blank: int = 0) -> list[int]:
    """CTC prefix beam search over one utterance's (T, V) log-probabilities: the most probable
    label sequence found, summing over the alignments of each prefix. Each prefix keeps two
    scores: ending in a blank and ending in its last label, so that "a a" (two labels) and "aa"
    (one label spread over two frames) stay apart."""
    NEG = -math.inf
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG)}  # prefix -> (blank, non-blank)
    for frame in log_probs.float().cpu().tolist():  # T frames of V log-probs
        # prune the labels: the beam_size best of this frame (and blank) are enough to extend with
        labels = sorted(range(len(frame)), key=frame.__getitem__, reverse=True)[:beam_size]
        if blank not in labels:
            labels.append(blank)
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], b: float, nb: float) -> None:
            cur = nxt.setdefault(prefix, [NEG, NEG])
            cur[0], cur[1] = _logaddexp(cur[0], b), _logaddexp(cur[1], nb)

        for prefix, (p_b, p_nb) in beams.items():
            total = _logaddexp(p_b, p_nb)
            for c in labels:
                p = frame[c]
                if c == blank:
                    add(prefix, total + p, NEG)
                elif prefix and prefix[-1] == c:
                    add(prefix, NEG, p_nb + p)          # repeat merged into the same label
                    add(prefix + (c,), NEG, p_b + p)    # a new label needs a blank in between
                else:
                    add(prefix + (c,), NEG, total + p)
        ranked = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]), reverse=True)[:beam_size]
        beams = {k: (v[0], v[1]) for k, v in ranked}
    return list(max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))[0])


def ctc_beam_search(log_probs: Tensor, lengths: Tensor | None = None, beam_size: int = 4,
                    blank: int = 0) -> list[list[int]]:
    """:func:`ctc_prefix_beam_search` for each row of (B, T, V) log-probs, over its real frames."""
    T = log_probs.shape[1]
    lengths = [T] * log_probs.shape[0] if lengths is None else lengths.tolist()
    return [ctc_prefix_beam_search(row[:n], beam_size, blank) for row, n in zip(log_probs, lengths)]
