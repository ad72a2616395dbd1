"""Kaldi n-best lists in `rnnlm rescore`: `utt-N text` with acoustic and LM cost files, the
combination formula, and one-line errors for lists and costs that do not match."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.model import init_params
from rnnlm.nbest import KaldiCosts, combination, parse_kaldi
from rnnlm.vocab import build_vocabulary, count_tokens

TEXT = "utt1-1 the cat sat\nutt1-2 the cat sat down\nutt2-1 a dog ran\nutt2-2 a dog sat\n"
ACOUSTIC = "utt1-1 120.5\nutt1-2 118.0\nutt2-1 80.0\nutt2-2 81.5\n"
LM = "utt1-1 20.0\nutt1-2 26.0\nutt2-1 15.0\nutt2-2 14.0\n"


def costs(acoustic=ACOUSTIC, lm=LM, scale=0.1):
    return KaldiCosts(acoustic.encode(), lm.encode(), scale)


def test_each_hypothesis_is_scored_from_its_costs():
    hypotheses = parse_kaldi(TEXT, costs(), lm_weight=0.25)
    assert [(h.id, h.key, h.text) for h in hypotheses][:2] == [
        ("utt1", "utt1-1", "the cat sat"),
        ("utt1", "utt1-2", "the cat sat down"),
    ]
    # −(0.1 · 120.5 + 0.75 · 20.0)
    assert hypotheses[0].score == pytest.approx(-(12.05 + 15.0))
    assert combination(0.25, costs()) == (
        "total = −(0.1 · ac_cost + 0.75 · lm_cost) + 0.25 · lm,  lm = ln p_RNN(text)"
    )


@pytest.mark.parametrize(
    "text, acoustic, lm, fragment",
    [
        (TEXT, ACOUSTIC.replace("utt2-2 81.5\n", ""), LM, "no cost for utt2-2 (line 4"),
        (TEXT, ACOUSTIC, LM + "utt3-1 1.0\n", "utt3-1 is not in the n-best list"),
        (TEXT.replace("utt2-1", "utt2"), ACOUSTIC, LM, "line 3: expected 'utt-N words'"),
        (TEXT, ACOUSTIC.replace("80.0", "eighty"), LM, "line 3: 'eighty' is not a number"),
        (TEXT, ACOUSTIC, LM + "utt1-1 3.0\n", "utt1-1 appears twice"),
    ],
)
def test_lists_and_costs_that_do_not_match_are_one_error(text, acoustic, lm, fragment):
    with pytest.raises(RnnlmError, match=fragment.replace("(", r"\(")):
        parse_kaldi(text, costs(acoustic, lm), lm_weight=0.5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kaldi")
    words = [line.split()[1:] for line in TEXT.splitlines()]
    vocab = build_vocabulary(count_tokens(words), 20)
    model_config = ModelConfig(vocab_size=len(vocab), hidden_size=4, cell="gru", embedding_size=3)
    config = Config(data=DataConfig(vocab_size=20, level="whitespace"), model=model_config)
    params = init_params(model_config, np.random.default_rng(3))
    checkpoint.save(folder / "m.npz", checkpoint.Checkpoint(config, vocab, params))
    for name, text in (("text", TEXT), ("ac_cost", ACOUSTIC), ("lm_cost", LM)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def rescore(files, *options):
    args = ["rescore", "--model", files / "m.npz", "--nbest", files / "text"]
    args += ["--ac-cost", files / "ac_cost", "--lm-cost", files / "lm_cost", *options]
    return CliRunner().invoke(main, [str(a) for a in args])


def test_rescore_combines_the_costs_with_the_rnn_as_printed(files):
    result = rescore(files, "--lm-weight", 0.4, "--acoustic-scale", 0.05, "--json")
    assert result.exit_code == 0, result.output
    assert "total = −(0.05 · ac_cost + 0.6 · lm_cost) + 0.4 · lm" in result.stderr
    rows = json.loads(result.stdout)
    acoustic = dict(line.split() for line in ACOUSTIC.splitlines())
    lm = dict(line.split() for line in LM.splitlines())
    for r in rows:
        expected = -(0.05 * float(acoustic[r["key"]]) + 0.6 * float(lm[r["key"]])) + 0.4 * r["lm"]
        assert r["total"] == pytest.approx(expected)
        assert r["lm"] < 0
    assert [r["id"] for r in rows] == ["utt1", "utt1", "utt2", "utt2"]
    for utterance in ("utt1", "utt2"):
        totals = [r["total"] for r in rows if r["id"] == utterance]
        assert totals == sorted(totals, reverse=True)


def test_with_lm_weight_0_the_order_is_kaldis_own(files):
    result = rescore(files, "--lm-weight", 0)
    assert result.exit_code == 0, result.output
    names = [line.split(" ||| ")[0] for line in result.stdout.splitlines()]
    # utt1: 12.05 + 20 < 11.8 + 26; utt2: 8.0 + 15 > 8.15 + 14
    assert names == ["utt1-1", "utt1-2", "utt2-2", "utt2-1"]


def test_one_cost_file_without_the_other_is_a_usage_error(files):
    args = ["rescore", "--model", files / "m.npz", "--nbest", files / "text"]
    result = CliRunner().invoke(main, [str(a) for a in [*args, "--ac-cost", files / "ac_cost"]])
    assert result.exit_code == 2
    assert "needs both --ac-cost and --lm-cost" in result.stderr
