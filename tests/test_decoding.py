"""The decoder spec, CTC greedy and prefix beam search, confidences, and the character n-gram LM."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch

from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.decoding import (
    DEFAULT_BEAM,
    CharNgramLM,
    DecoderSpec,
    ctc_beam_search,
    ctc_decode,
    ctc_greedy,
    viterbi_states,
)


def peaked(paths: list[list[int]], num_classes: int, peak: float = 0.9, seed: int = 0) -> torch.Tensor:
    """(T, B, C) log probs whose best class per frame is the given path; the rest shares 1 - peak."""
    rng = np.random.default_rng(seed)
    t = max(map(len, paths))
    p = rng.random((t, len(paths), num_classes)) + 0.01
    for b, path in enumerate(paths):
        for i in range(t):
            c = path[i] if i < len(path) else 0
            p[i, b, c] = 0.0
            p[i, b] *= (1 - peak) / p[i, b].sum()
            p[i, b, c] = peak
    return torch.from_numpy(np.log(p)).float()


def frames_for(text: str, charset: Charset, rng: np.random.Generator) -> list[int]:
    """A plausible CTC path: each character held for 1-3 frames, blanks between and around."""
    path = [0] * int(rng.integers(0, 3))
    for i, c in enumerate(charset.encode(text)):
        if i and charset.encode(text)[i - 1] == c:
            path.append(0)  # repeats need a blank between them
        path += [c] * int(rng.integers(1, 4)) + [0] * int(rng.integers(0, 2))
    return path


def test_greedy_collapses_repeats_drops_blanks_and_respects_lengths():
    cs = Charset("ab")
    paths = [[1, 1, 0, 1, 2, 2, 0], [2, 0, 2, 1, 1, 1, 1]]
    lp = peaked(paths, cs.num_classes)
    out = ctc_greedy(lp, torch.tensor([7, 3]), cs)
    assert [r.text for r in out] == ["aab", "bb"]
    assert out[0].indices == [1, 1, 2]
    assert out[0].char_confidences == pytest.approx([0.9, 0.9, 0.9], abs=1e-5)
    assert out[0].confidence == pytest.approx(0.9, abs=1e-5)


def test_greedy_confidence_is_the_mean_of_character_confidences():
    cs = Charset("ab")
    p = torch.tensor([[0.1, 0.6, 0.3], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    r = ctc_greedy(p.log()[:, None], torch.tensor([4]), cs)[0]
    assert r.text == "ab"
    assert r.char_confidences == pytest.approx([0.8, 0.6])  # best frame of the run of a's
    assert r.confidence == pytest.approx(0.7)


def test_empty_and_zero_length_lines():
    cs = Charset("ab")
    lp = peaked([[0, 0, 0]], cs.num_classes, peak=0.95)
    for decode in (ctc_greedy, ctc_beam_search):
        blank, none = decode(lp.expand(-1, 2, -1), torch.tensor([3, 0]), cs)
        assert blank.text == "" and blank.confidence == pytest.approx(0.95, abs=1e-5)
        assert none.text == "" and none.confidence == 0.0


def test_decoders_reject_mismatched_inputs():
    lp = torch.zeros(5, 2, 7).log_softmax(-1)
    with pytest.raises(ValueError, match="7 classes but the charset needs 80"):
        ctc_greedy(lp, torch.tensor([5, 5]), DEFAULT_CHARSET)
    with pytest.raises(ValueError, match=r"lengths must be 2 values in \[0, 5\]"):
        ctc_beam_search(lp, torch.tensor([5, 6]), Charset("abcdef"))
    with pytest.raises(ValueError, match=r"\(T, B, C\)"):
        ctc_greedy(lp[0], torch.tensor([5]), Charset("abcdef"))


def test_greedy_and_beam_agree_on_peaked_distributions():
    rng = np.random.default_rng(1)
    texts = ["hello world", "It's 42.", "aabbcc", "Mississippi", "x"]
    paths = [frames_for(t, DEFAULT_CHARSET, rng) for t in texts]
    lp = peaked(paths, DEFAULT_CHARSET.num_classes, peak=0.8)
    lengths = torch.tensor([len(p) for p in paths])
    greedy = ctc_greedy(lp, lengths, DEFAULT_CHARSET)
    beam = ctc_beam_search(lp, lengths, DEFAULT_CHARSET, beam=8)
    assert [r.text for r in greedy] == [r.text for r in beam] == texts
    for g, b in zip(greedy, beam, strict=True):
        assert b.confidence == pytest.approx(g.confidence, abs=1e-4)
        assert b.char_confidences == pytest.approx(g.char_confidences, abs=1e-4)


def _labelling_probs(p: np.ndarray) -> dict[tuple[int, ...], float]:
    """Every path of a tiny (T, C) table, collapsed: the exact probability of each labelling."""
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(p.shape[1]), repeat=p.shape[0]):
        label = tuple(c for i, c in enumerate(path) if c and (i == 0 or path[i - 1] != c))
        out[label] = out.get(label, 0.0) + float(np.prod(p[np.arange(p.shape[0]), path]))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_finds_the_most_probable_labelling_of_small_tables(seed):
    cs = Charset("ab")
    p = np.random.default_rng(seed).dirichlet(np.ones(3) * 0.7, size=5)  # (T=5, C=3)
    exact = _labelling_probs(p)
    best = max(exact, key=exact.get)
    r = ctc_beam_search(torch.from_numpy(np.log(p))[:, None].float(), torch.tensor([5]), cs, beam=64,
                        prune=0.0)[0]
    assert exact[tuple(r.indices)] == pytest.approx(exact[best], rel=1e-6)


def test_language_model_moves_a_near_miss_to_a_seen_word():
    cs = DEFAULT_CHARSET
    path = [x for c in cs.encode("the cat sat") for x in (c, 0)]  # one frame per character
    lp = peaked([path], cs.num_classes, peak=0.9).numpy()
    a, o = cs.encode("a")[0], cs.encode("o")[0]
    for t, c in enumerate(path):  # the optical model slightly prefers "cot" and "sot"
        if c == a:
            lp[t, 0, o], lp[t, 0, a] = math.log(0.5), math.log(0.4)
    lp_t, lengths = torch.from_numpy(lp), torch.tensor([len(path)])
    assert ctc_greedy(lp_t, lengths, cs)[0].text == "the cot sot"
    assert ctc_beam_search(lp_t, lengths, cs, beam=10)[0].text == "the cot sot"
    lm = CharNgramLM.fit(["the cat sat on the mat", "a cat sat", "that cat"] * 5, order=4)
    with_lm = ctc_beam_search(lp_t, lengths, cs, beam=10, lm=lm, lm_weight=1.0)[0]
    assert with_lm.text == "the cat sat"
    assert with_lm.confidence < 0.9  # the chosen a's had probability 0.4 in the optical model


def test_lm_is_a_distribution_and_round_trips():
    cs = Charset("abc ")
    lm = CharNgramLM.fit(["abc abc", "cab", "bad text: d is not in the charset"], order=3, charset=cs)
    for context in ("", "a", "ab", "cc"):
        total = sum(math.exp(lm.log_prob(context, c)) for c in cs.chars) + math.exp(lm.log_prob_end(context))
        assert total == pytest.approx(1.0)
    assert lm.log_prob("ab", "c") > lm.log_prob("ab", "a")
    assert lm.log_prob("ab", "b") > -math.inf  # unseen continuations keep some probability
    again = CharNgramLM.from_dict(lm.to_dict())
    assert again.log_prob("ca", "b") == lm.log_prob("ca", "b")
    assert not any("d" in gram for gram in lm.counts)  # the text outside the charset was skipped
    with pytest.raises(ValueError, match="not in the language model's charset"):
        lm.log_prob("a", "z")
    with pytest.raises(ValueError, match="kind 'witten-bell'"):
        CharNgramLM.from_dict({"kind": "kenlm"})


def test_lm_for_another_charset_is_refused():
    lm = CharNgramLM.fit(["ab"], order=2, charset=Charset("ab"))
    with pytest.raises(ValueError, match="different charset"):
        ctc_beam_search(torch.zeros(3, 1, 80).log_softmax(-1), torch.tensor([3]), DEFAULT_CHARSET, lm=lm)


def test_viterbi_alignment_needs_a_blank_between_repeats():
    lp = np.log(np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="no CTC alignment of 2 labels to 2 frames"):
        viterbi_states(lp, [1, 1])
    assert viterbi_states(np.log(np.full((3, 2), 0.5)), [1, 1]).tolist() == [1, 2, 3]


def test_beam_search_confidences_on_long_lines():
    cs = DEFAULT_CHARSET
    text = "A long line of handwriting, long enough for more than a hundred CTC states in its alignment."
    path = [x for c in cs.encode(text) for x in (c, 0)]
    lp = peaked([path], cs.num_classes, peak=0.9)
    r = ctc_beam_search(lp, torch.tensor([len(path)]), cs, beam=5)[0]
    assert r.text == text
    assert r.char_confidences == pytest.approx([0.9] * len(text), abs=1e-5)


# --- the decoder spec ------------------------------------------------------------------------------


def test_decoder_spec_defaults_to_greedy_with_the_one_default_beam_width():
    spec = DecoderSpec()
    assert (spec.kind, spec.beam, spec.lm_weight, spec.insertion_bonus) == ("greedy", DEFAULT_BEAM, 0.0, 0.0)
    assert DecoderSpec("beam").beam == DEFAULT_BEAM


@pytest.mark.parametrize("spec", [
    DecoderSpec(), DecoderSpec("beam"), DecoderSpec("beam", 16, 0.35), DecoderSpec("beam", 4, 0.5, -0.25),
])
def test_decoder_spec_round_trips_through_its_dict(spec):
    d = spec.to_dict()
    assert d == {"kind": spec.kind, "beam": spec.beam, "lm_weight": spec.lm_weight,
                 "insertion_bonus": spec.insertion_bonus}
    assert all(type(v) in (str, int, float) for v in d.values())  # what weights_only loading accepts
    assert DecoderSpec.from_dict(d) == spec


@pytest.mark.parametrize("old, want", [
    ({"kind": "greedy", "beam": 10, "lm_weight": 0.0}, DecoderSpec()),  # what artifacts have held so far
    ({"kind": "beam", "beam": 16, "lm_weight": 0.4}, DecoderSpec("beam", 16, 0.4)),
    ({"kind": "beam", "beam": 8, "lm_weight": 1}, DecoderSpec("beam", 8, 1.0)),  # an int weight
    ({"kind": "greedy"}, DecoderSpec()),
    ({}, DecoderSpec()),
])
def test_decoder_spec_reads_the_artifact_dicts_written_so_far(old, want):
    got = DecoderSpec.from_dict(old)
    assert got == want and isinstance(got.lm_weight, float) and isinstance(got.beam, int)


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "viterbi"}, "unknown decoder kind 'viterbi'; expected one of greedy, beam"),
    ({"kind": "beam", "beam": 0}, "beam width must be an integer >= 1, got 0"),
    ({"kind": "beam", "beam": 2.5}, "beam width must be an integer >= 1, got 2.5"),
    ({"kind": "beam", "beam": True}, "beam width must be an integer >= 1, got True"),
    ({"kind": "beam", "lm_weight": -0.1}, "lm_weight must be >= 0, got -0.1"),
    ({"kind": "beam", "lm_weight": math.nan}, "lm_weight must be a finite number, got nan"),
    ({"kind": "beam", "lm_weight": "0.3"}, "lm_weight must be a finite number, got '0.3'"),
    ({"kind": "beam", "insertion_bonus": math.inf}, "insertion_bonus must be a finite number, got inf"),
    ({"kind": "greedy", "lm_weight": 0.3}, "a greedy decoder takes no lm_weight or insertion_bonus"),
])
def test_decoder_spec_errors_name_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DecoderSpec(**kwargs)


def test_decoder_spec_from_dict_rejects_unknown_keys_and_kinds():
    with pytest.raises(ValueError, match=re.escape("unknown keys ['width']; expected some of ['kind', 'beam'")):
        DecoderSpec.from_dict({"kind": "beam", "width": 10})
    with pytest.raises(ValueError, match="unknown decoder kind 'psychic'"):
        DecoderSpec.from_dict({"kind": "psychic"})
    with pytest.raises(ValueError, match="must be a mapping, got str"):
        DecoderSpec.from_dict("greedy")  # type: ignore[arg-type]


def test_decoder_spec_labels():
    assert DecoderSpec().label() == "greedy"
    assert DecoderSpec("beam", 10, 0.3).label() == "beam10+lm0.3"
    assert DecoderSpec("beam", 16).label() == "beam16"
    assert DecoderSpec("beam", 8, 0.5, 0.25).label() == "beam8+lm0.5+ins0.25"


def test_ctc_decode_follows_the_spec():
    cs = Charset("ab")
    lp = torch.tensor([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0]]).clamp_min(1e-6).log()[:, None]  # (T=2, B=1, C=3)
    lengths = torch.tensor([2])
    assert ctc_decode(lp, lengths, cs, DecoderSpec())[0].text == ctc_greedy(lp, lengths, cs)[0].text == ""
    assert ctc_decode(lp, lengths, cs, DecoderSpec("beam", 4))[0].text == "a"  # the best labelling
    lm = CharNgramLM.fit(["b", "bb"], order=2, charset=cs)
    fused = ctc_decode(lp, lengths, cs, DecoderSpec("beam", 4, lm_weight=3.0), lm)[0]
    assert fused.text == ""  # the LM has never seen an "a"
    assert fused.text == ctc_beam_search(lp, lengths, cs, beam=4, lm=lm, lm_weight=3.0)[0].text
