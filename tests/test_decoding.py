"""The decoder spec, CTC greedy and prefix beam search, confidences, the character n-gram LM and the
word LM (lexicon fusion), and how both travel in the model artifact."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from fixtures.lines import line_image
from fixtures.models import TINY

from textrec.artifact import ArtifactError, artifact_dict, read_artifact, save_artifact
from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.decoding import (
    DEFAULT_BEAM,
    CharNgramLM,
    DecoderSpec,
    WordLM,
    ctc_beam_search,
    ctc_decode,
    ctc_greedy,
    viterbi_states,
    words_of,
)
from textrec.models import create_model
from textrec.recognizer import Recognizer
from textrec.stem import LineStem, StemConfig


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
    assert (spec.kind, spec.beam, spec.lm_weight, spec.insertion_bonus, spec.word_weight) == (
        "greedy", DEFAULT_BEAM, 0.0, 0.0, 0.0)
    assert DecoderSpec("beam").beam == DEFAULT_BEAM


@pytest.mark.parametrize("spec", [
    DecoderSpec(), DecoderSpec("beam"), DecoderSpec("beam", 16, 0.35), DecoderSpec("beam", 4, 0.5, -0.25),
    DecoderSpec("beam", 8, 0.2, word_weight=0.4),
])
def test_decoder_spec_round_trips_through_its_dict(spec):
    d = spec.to_dict()
    assert d == {"kind": spec.kind, "beam": spec.beam, "lm_weight": spec.lm_weight,
                 "insertion_bonus": spec.insertion_bonus, "word_weight": spec.word_weight}
    assert all(type(v) in (str, int, float) for v in d.values())  # what weights_only loading accepts
    assert DecoderSpec.from_dict(d) == spec


@pytest.mark.parametrize("old, want", [
    ({"kind": "greedy", "beam": 10, "lm_weight": 0.0}, DecoderSpec()),  # what artifacts have held so far
    ({"kind": "beam", "beam": 16, "lm_weight": 0.4}, DecoderSpec("beam", 16, 0.4)),
    ({"kind": "beam", "beam": 8, "lm_weight": 1}, DecoderSpec("beam", 8, 1.0)),  # an int weight
    ({"kind": "greedy"}, DecoderSpec()),
    ({}, DecoderSpec()),
    ({"kind": "beam", "beam": 8, "lm_weight": 0.3, "insertion_bonus": 0.5}, DecoderSpec("beam", 8, 0.3, 0.5)),
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
    ({"kind": "beam", "word_weight": -1}, "word_weight must be >= 0, got -1.0"),
    ({"kind": "beam", "word_weight": "high"}, "word_weight must be a finite number, got 'high'"),
    ({"kind": "greedy", "lm_weight": 0.3}, "greedy decoder takes no lm_weight, insertion_bonus or word_weight"),
    ({"kind": "greedy", "word_weight": 0.3}, "word_weight=0.3; use kind 'beam'"),
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
    assert DecoderSpec("beam", 8, 0.5, word_weight=0.3).label() == "beam8+lm0.5+word0.3"


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


# --- the word LM -----------------------------------------------------------------------------------


LEXICON = WordLM.from_counts({"the": 500, "crowd": 20, "crown": 5, "cheered": 3, "at": 200, "am": 50,
                              "to": 300})


def one_frame_per_char(text: str, rivals: dict[int, str],
                       cs: Charset = DEFAULT_CHARSET) -> tuple[torch.Tensor, torch.Tensor]:
    """Log probs that spell ``text`` one frame per character with a blank after each, except that at
    character ``i`` of ``rivals`` the optical model slightly prefers the rival (0.5 against 0.4)."""
    path = [x for c in cs.encode(text) for x in (c, 0)]
    lp = peaked([path], cs.num_classes, peak=0.9).numpy()
    for i, rival in rivals.items():
        lp[2 * i, 0, cs.encode(rival)[0]], lp[2 * i, 0, path[2 * i]] = math.log(0.5), math.log(0.4)
    return torch.from_numpy(lp), torch.tensor([len(path)])


@pytest.mark.parametrize("truth", ["the crowd cheered", "cheered the crowd"])  # mid-line and at the end
def test_word_lm_moves_a_near_miss_to_a_lexicon_word(truth):
    cs = DEFAULT_CHARSET
    lp, lengths = one_frame_per_char(truth, {truth.index("crowd") + 3: "u"})
    misread = truth.replace("crowd", "croud")
    assert ctc_greedy(lp, lengths, cs)[0].text == misread
    assert ctc_beam_search(lp, lengths, cs, beam=10)[0].text == misread
    fixed = ctc_beam_search(lp, lengths, cs, beam=10, words=LEXICON, word_weight=1.0)[0]
    assert fixed.text == truth
    assert fixed.confidence < 0.9  # the chosen "w" had probability 0.4 in the optical model
    spec = DecoderSpec("beam", 10, word_weight=1.0)  # the same through the spec and a carrier LM
    assert ctc_decode(lp, lengths, cs, spec, CharNgramLM.uniform(cs).with_words(LEXICON))[0].text == truth
    assert ctc_decode(lp, lengths, cs, DecoderSpec("beam", 10), CharNgramLM.uniform(cs).with_words(LEXICON)
                      )[0].text == misread  # word_weight 0: words are carried but not used


def test_numbers_and_punctuation_are_never_penalised():
    cs = DEFAULT_CHARSET
    # "10" looks a little like "to", a frequent word: a word LM that took numbers for unknown words would
    # read "at to am"; this one leaves the number as the optical model read it
    lp, lengths = one_frame_per_char("at 10 am", {})
    lp[2 * 3, 0, cs.encode("t")[0]] = lp[2 * 4, 0, cs.encode("o")[0]] = math.log(0.4)
    for weight in (0.0, 1.0, 3.0):
        read = ctc_beam_search(lp, lengths, cs, beam=10, words=LEXICON, word_weight=weight)[0]
        assert read.text == "at 10 am"
    for token in ("1987", "(2.45),", "3rd", "21st", "1990s", "3/4", "...", "--", "\"", ""):
        assert LEXICON.segment_score(token, complete=True) == 0.0, token
    # a digit inside a word is no way out of the lexicon: such a token scores as an unknown word
    unknown = LEXICON.oov_log_prob - LEXICON.typical_log_prob
    assert LEXICON.segment_score("cr0wd", complete=True) == unknown < LEXICON.word_score("crowd")


def test_word_weight_zero_is_the_search_without_words():
    cs = DEFAULT_CHARSET
    rng = np.random.default_rng(4)
    texts = ["the crowd", "at 10 am", "crown the crowd", "to the"]
    paths = [frames_for(t, cs, rng) for t in texts]
    lp, lengths = peaked(paths, cs.num_classes, peak=0.5), torch.tensor([len(p) for p in paths])
    lm = CharNgramLM.fit(["the crowd cheered at the crown", "to the"] * 3, order=3)
    plain = ctc_beam_search(lp, lengths, cs, beam=6, lm=lm, lm_weight=0.5)
    zero = ctc_beam_search(lp, lengths, cs, beam=6, lm=lm, lm_weight=0.5, words=LEXICON, word_weight=0.0)
    spec = DecoderSpec("beam", 6, 0.5)
    carried = ctc_decode(lp, lengths, cs, spec, lm.with_words(LEXICON))
    for a, b, c in zip(plain, zero, carried, strict=True):
        assert a.text == b.text == c.text and a.confidence == b.confidence == c.confidence


def test_word_lm_folds_case_looks_ahead_and_scores_whole_lines():
    lm = WordLM.from_counts({"The": 3, "the": 7, "crowd": 2, "crown": 1, "don't": 1})
    assert len(lm) == 4 and "THE" in lm and "croud" not in lm
    assert lm.log_prob("The") == lm.log_prob("the") == pytest.approx(math.log(10 / 14), abs=1e-6)
    assert lm.oov_log_prob == pytest.approx(math.log(1 / 14) - math.log(10), abs=1e-6)
    assert lm.prefix_log_prob("CRO") == lm.log_prob("crowd")  # the best word it could still become
    assert lm.prefix_log_prob("crou") == lm.oov_log_prob
    assert lm.prefix_log_prob("don'") == lm.log_prob("don't")
    assert lm.segment_score("crow", complete=False) == lm.prefix_log_prob("crow") - lm.typical_log_prob
    assert lm.segment_score("crow", complete=True) == lm.word_score("crow")
    assert lm.text_score("The crowd, don't") == pytest.approx(
        lm.word_score("the") + lm.word_score("crowd") + lm.word_score("don't"))
    assert words_of("The crowd's 2nd cheer -- well-known") == ["the", "crowd's", "cheer", "well", "known"]


def test_word_lm_survives_weights_only_loading_exactly(tmp_path):
    lm = WordLM.from_counts({"alpha": 3, "beta": 2, "gamma": 1})
    torch.save({"word_lm": lm.to_dict()}, tmp_path / "w.pt")
    again = WordLM.from_dict(torch.load(tmp_path / "w.pt", weights_only=True)["word_lm"])
    assert again.words == lm.words and np.array_equal(again.log_probs, lm.log_probs)
    assert again.oov_log_prob == lm.oov_log_prob and again.typical_log_prob == lm.typical_log_prob


@pytest.mark.parametrize("log_probs, oov, message", [
    ({"r2d2": -1.0}, -5.0, "'r2d2' is not a word"),
    ({"ok": 0.5}, -5.0, "log-probability of 'ok' must be a number <= 0, got 0.5"),
    ({"ok": -1.0}, -0.5, "oov_log_prob must be a finite number no higher than the rarest word's"),
    ({"ok": -1.0}, math.nan, "oov_log_prob must be a finite number"),
    ({}, -5.0, "the lexicon is empty"),
])
def test_bad_word_lms_are_named(log_probs, oov, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        WordLM(log_probs, oov)


def test_bad_word_lm_sources_are_named():
    with pytest.raises(ValueError, match="expected kind 'unigram', got 'kenlm'"):
        WordLM.from_dict({"kind": "kenlm"})
    with pytest.raises(ValueError, match="unknown lexicon 'dictionary'; expected one of wordfreq"):
        WordLM.build("dictionary")
    with pytest.raises(ValueError, match="no word counts"):
        WordLM.build("texts", ["1987 -- 42"])


def test_the_wordfreq_lexicon_knows_common_words_and_can_learn_the_training_texts():
    lm = WordLM.build("wordfreq", size=20_000)
    assert 15_000 < len(lm) <= 20_000
    assert "crowd" in lm and "The" in lm and "don't" in lm and "croud" not in lm and "u.s" not in lm
    assert lm.log_prob("the") > lm.log_prob("crowd") > lm.oov_log_prob
    texts = ["Zorblax met the crowd.", "zorblax, again"]
    extended = WordLM.build("wordfreq+texts", texts, size=20_000)
    assert "zorblax" in extended and len(extended) == len(lm) + 1
    assert WordLM.build("texts", texts).words == ["again", "crowd", "met", "the", "zorblax"]


# --- the word LM in the model artifact ---------------------------------------------------------------


def _tiny_ctc_model():
    torch.manual_seed(0)
    return create_model("line_cnn_lstm", num_classes=DEFAULT_CHARSET.num_classes, height=32, **TINY)


def test_the_word_lm_travels_in_the_artifact_to_the_recognizer(tmp_path):
    model, stem = _tiny_ctc_model(), LineStem(StemConfig(height=32))
    words = WordLM.build("wordfreq", size=20_000)
    char_lm = CharNgramLM.fit(["a line of text", "the crowd cheered"], order=3)
    spec = DecoderSpec("beam", 4, 0.3, word_weight=0.5)
    plain = save_artifact(tmp_path / "plain.pt", model, charset=DEFAULT_CHARSET, stem=stem, decoder=spec,
                          lm=char_lm)
    path = save_artifact(tmp_path / "model.pt", model, charset=DEFAULT_CHARSET, stem=stem, decoder=spec,
                         lm=char_lm.with_words(words))
    growth = path.stat().st_size - plain.stat().st_size
    print(f"artifact grows by {growth / 1e6:.2f} MB for {len(words)} words "
          f"({growth / len(words):.1f} bytes each)")
    assert growth < 16 * len(words)  # compact: one string and one float32 tensor
    raw = torch.load(path, weights_only=True)
    assert raw["decoder"] == spec.to_dict() and raw["decoder"]["word_weight"] == 0.5
    assert raw["word_lm"]["kind"] == "unigram" and torch.load(plain, weights_only=True)["word_lm"] is None
    rec = Recognizer.load(path)
    assert rec.decoder == spec and rec.lm is not None and rec.lm.counts == char_lm.counts
    assert rec.lm.words is not None and rec.lm.words.words == words.words
    assert np.array_equal(rec.lm.words.log_probs, words.log_probs)
    for seed, width in enumerate([160, 260]):
        image = line_image(width=width, seed=seed, height=40)
        x = rec.preprocess(image)
        want = model.recognise(x[None], torch.tensor([x.shape[-1]]), spec, char_lm.with_words(words))[0]
        got = rec.recognise([image])[0]
        assert got.text == want.text and got.confidence == pytest.approx(want.confidence, abs=1e-6)


def test_a_word_lm_without_character_fusion_and_artifacts_without_one_both_load(tmp_path):
    model, stem = _tiny_ctc_model(), LineStem(StemConfig(height=32))
    words = WordLM.from_counts({"the": 3, "crowd": 1})
    alone = save_artifact(tmp_path / "alone.pt", model, charset=DEFAULT_CHARSET, stem=stem,
                          decoder=DecoderSpec("beam", 4, word_weight=0.5),
                          lm=CharNgramLM.uniform().with_words(words))
    rec = Recognizer.load(alone)
    assert rec.lm is not None and rec.lm.counts == {}
    assert rec.lm.words is not None and rec.lm.words.words == words.words
    old = artifact_dict(model, charset=DEFAULT_CHARSET, stem=stem, lm=CharNgramLM.fit(["old text"], order=2))
    del old["word_lm"]
    old["decoder"] = {"kind": "beam", "beam": 4, "lm_weight": 0.3, "insertion_bonus": 0.0}
    torch.save(old, tmp_path / "old.pt")
    rec = Recognizer.load(tmp_path / "old.pt")
    assert rec.decoder.word_weight == 0.0 and rec.lm is not None and rec.lm.words is None
    assert len(rec.recognise([line_image(width=120, seed=3, height=40)])) == 1


def test_a_bad_word_lm_entry_is_named_with_the_file(tmp_path):
    data = artifact_dict(_tiny_ctc_model(), charset=DEFAULT_CHARSET, stem=LineStem(StemConfig(height=32)))
    data["word_lm"] = {"kind": "kenlm"}
    torch.save(data, tmp_path / "model.pt")
    with pytest.raises(ArtifactError, match="bad word_lm entry") as e:
        read_artifact(tmp_path / "model.pt")
    assert str(tmp_path / "model.pt") in str(e.value)
