"""The flow chapter's measurements: the flow networks against the zero flow and the classical methods,
the bounds a network must meet before it teaches motion through the OFS loss, and what the OFS loss
makes of wrong motions. The sentences are computed from the run, whichever way it came out."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from .comparisons import ReportError, bound_lines

__all__ = ["flow_network_bounds", "estimator_table", "networks_table", "ranking_sentences", "why_sentences",
           "bounds_sentence", "wrong_motion_ratios", "ofs_sentences", "syllable_table", "syllable_sentence", "listed",
           "NEAR_ZERO", "SAME_LOSS"]

# "Scores like the zero flow": an EPE within this fraction of the zero flow's.
NEAR_ZERO = 0.05
# "Nearly the same loss": every wrong motion's OFS loss within this fraction of the real frames'.
SAME_LOSS = 0.1
CLASSICAL = ("DIS", "Farneback")


def listed(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``, each name in backticks."""
    items = [f"`{i}`" for i in items]
    if not items:
        raise ReportError("nothing to list")
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def estimator_table(epe: Mapping) -> pd.DataFrame:
    """``metrics/flow_epe.json``'s estimators as a table: EPE over the face and the mouth, and the
    time per pair, one line per estimator (the zero flow, the classical methods, the networks)."""
    return pd.DataFrame(epe["estimators"]).T.rename(columns={
        "epe": "EPE (px)", "epe_mouth": "EPE mouth (px)", "ms_per_pair": "ms per pair"})


def networks_table(table: pd.DataFrame, logs: Mapping[str, Mapping], sizes: Mapping[str, int]) -> pd.DataFrame:
    """One line per trained network that the estimator ``table`` scored: its size, its training
    (steps and minutes, from its log) and its error, also as the share of the zero flow's error it
    removes and the error it removes per minute of training."""
    zero = table.loc["zero flow", "EPE (px)"]
    nets = [name for name in logs if name in table.index]
    if not nets:
        raise ReportError("no trained flow network was scored on the held-out pairs")
    return pd.DataFrame({name: {
        "parameters (M)": sizes[name] / 1e6, "steps": logs[name]["steps"], "training (min)": logs[name]["seconds"] / 60,
        "EPE (px)": table.loc[name, "EPE (px)"], "EPE mouth (px)": table.loc[name, "EPE mouth (px)"],
        "error removed vs zero flow (%)": 100 * (1 - table.loc[name, "EPE (px)"] / zero),
        "EPE removed per training minute (px)": (zero - table.loc[name, "EPE (px)"]) / (logs[name]["seconds"] / 60),
    } for name in nets}).T


def _networks_win(table: pd.DataFrame, networks: pd.DataFrame) -> bool:
    classical = [name for name in CLASSICAL if name in table.index]
    if not classical:
        return True
    return bool(networks["EPE (px)"].min() < table.loc[classical, "EPE (px)"].min())


def ranking_sentences(table: pd.DataFrame, networks: pd.DataFrame, ofs_network: str, params_file: str) -> str:
    """Which estimator has the lowest EPE, whether the best network beats the best classical method,
    which networks beat the zero flow, which learns most per minute, which sees the mouth best, and
    the mouth EPE of the network the OFS loss uses (``generators.defaults.flow_network``)."""
    zero = table.loc["zero flow", "EPE (px)"]
    best = table["EPE (px)"].drop("zero flow").idxmin()
    best_net = networks["EPE (px)"].idxmin()
    beat_zero = networks.index[networks["EPE (px)"] < zero].tolist()
    no_better = networks.index[networks["EPE (px)"] >= zero].tolist()
    no_better_epe = ", ".join(f"{networks.loc[n, 'EPE (px)']:.3f}" for n in no_better)
    per_minute = networks["EPE removed per training minute (px)"]
    mouth_best = networks["EPE mouth (px)"].idxmin()
    classical = [name for name in CLASSICAL if name in table.index]
    first = f"Lowest EPE of all: `{best}` ({table.loc[best, 'EPE (px)']:.3f} px). The best trained network, `{best_net}` " \
            f"({networks.loc[best_net, 'EPE (px)']:.3f} px)"
    if classical:
        best_classical = table.loc[classical, "EPE (px)"].idxmin()
        first += (f", {'beats' if _networks_win(table, networks) else 'does not beat'} the best classical method, "
                  f"`{best_classical}` ({table.loc[best_classical, 'EPE (px)']:.3f} px).")
    else:
        first += "; no classical method was scored."
    return " ".join([
        first,
        (f"{listed(beat_zero)} beat{'s' * (len(beat_zero) == 1)} the zero flow ({zero:.3f} px)" if beat_zero else
         f"No network beats the zero flow ({zero:.3f} px)")
        + (f"; {listed(no_better)} {'does' if len(no_better) == 1 else 'do'} not "
           f"({no_better_epe} px)." if no_better and beat_zero else "."),
        f"Per minute of training, `{per_minute.idxmax()}` removes the most error ({per_minute.max():.4f} px) and "
        f"`{per_minute.idxmin()}` the least ({per_minute.min():.4f} px"
        + (", it is worse than no motion at all" if per_minute.min() < 0 else "") + ").",
        f"Over the mouth, the network with the lowest EPE is `{mouth_best}` "
        f"({networks.loc[mouth_best, 'EPE mouth (px)']:.3f} px); the generators' OFS loss uses `{ofs_network}` "
        f"(`generators.defaults.flow_network` in `{params_file}`)"
        + (f", whose mouth EPE is {networks.loc[ofs_network, 'EPE mouth (px)']:.3f} px."
           if ofs_network in networks.index else "."),
    ])


def why_sentences(epe: Mapping, table: pd.DataFrame, networks: pd.DataFrame) -> str:
    """Why the networks do or do not beat the classical methods on this run: the size of the
    corpus's motion, the networks' training time, those no better than the zero flow, and which
    network learns slowest per minute."""
    minutes = networks["training (min)"]
    if _networks_win(table, networks):
        best_net = networks["EPE (px)"].idxmin()
        return (f"Here the trained `{best_net}` beats the classical methods, on motion of {epe['mean_flow_px']:.2f} px "
                f"on average over the face and {epe['mean_mouth_flow_px']:.2f} px at the lips, after "
                f"{minutes[best_net]:.1f} CPU minutes of training.")
    zero = table.loc["zero flow", "EPE (px)"]
    largest = networks["parameters (M)"].idxmax()
    slowest = networks["EPE removed per training minute (px)"].idxmin()
    like_zero = networks.index[(networks["EPE (px)"] - zero).abs() < NEAR_ZERO * zero].tolist()
    text = [
        f"Why the networks do not win here. The corpus's motion between consecutive frames is small "
        f"({epe['mean_flow_px']:.2f} px on average over the face, {epe['mean_mouth_flow_px']:.2f} px at the lips) and "
        "smooth: the regime where DIS, a classical coarse-to-fine method built for small displacements, is at its best. "
        "GMA and RAFT were designed for large displacements in natural scenes, and their published weights come from "
        "days of GPU training on synthetic datasets (FlyingChairs, FlyingThings); here they start from random weights "
        f"and train for {minutes.min():.1f}–{minutes.max():.1f} CPU minutes (the training curves above)."]
    if like_zero:
        text.append(f"{listed(like_zero)} {'scores' if len(like_zero) == 1 else 'score'} within {NEAR_ZERO:.0%} of the "
                    "zero flow's EPE: on this test no better than predicting no motion at all.")
    text.append(f"Per minute of CPU, `{slowest}` learns slowest"
                + (f", and it is the largest network ({networks.loc[largest, 'parameters (M)']:.2f} M parameters)."
                   if slowest == largest else f"; the largest network is `{largest}`."))
    text.append("With public pretrained weights (`load_flow_checkpoint`) or the GPU profile's longer training the "
                "ordering may change; on this budget the OFS loss is best served by the network that scores best here, "
                "whichever the paper chose.")
    return " ".join(text)


def flow_network_bounds(estimators: Mapping[str, Mapping], ofs_network: str) -> pd.DataFrame:
    """The bounds a flow network is held to before it teaches motion through the OFS loss, measured
    on held-out pairs (``metrics/flow_epe.json``'s ``estimators``): the network in the loss removes
    at least half of the zero flow's error on the mouth, and GMA, the paper's choice, sees the mouth
    at least as well as RAFT."""
    zero = estimators["zero flow"]["epe_mouth"]
    checks = []
    if ofs_network in estimators:
        checks.append((f"{ofs_network} (the OFS loss's network): share of the zero flow's mouth error removed",
                       1 - estimators[ofs_network]["epe_mouth"] / zero, ">=", 0.5))
    if "gma" in estimators and "raft" in estimators:
        checks.append(("GMA's mouth EPE / RAFT's", estimators["gma"]["epe_mouth"] / estimators["raft"]["epe_mouth"],
                       "<=", 1.0))
    if not checks:
        raise ReportError(f"no estimate of {ofs_network!r}, GMA or RAFT to hold to a bound")
    return pd.DataFrame(bound_lines(checks)).set_index("claim")


def bounds_sentence(bounds: pd.DataFrame, logs: Mapping[str, Mapping]) -> str:
    """Whether the flow bounds are met on this run and, where not, what that means for the OFS rows."""
    unmet = bounds.index[~bounds["met"]].tolist()
    if not unmet:
        return "Both bounds are met on this run." if len(bounds) == 2 else "The bound is met on this run."
    gma = logs.get("gma")
    return ("Not met on this run: " + "; ".join(unmet) + ". The training curves above show why: on this budget "
            + (f"GMA trains {gma['steps']} steps in {gma['seconds'] / 60:.0f} CPU minutes, " if gma else "")
            + "the networks have left the zero flow only partly, so the OFS rows of the study chapter test a loss whose "
            "network sees part of the lips' motion, and a row that differs from another only in its flow network "
            "differs in how much of that motion its loss can see.")


def wrong_motion_ratios(ofs: pd.DataFrame, network: str) -> pd.Series:
    """Each wrong motion's OFS loss with ``network`` as a multiple of the real frames' loss (``ofs``:
    one column per network, one line per motion, ``real frames`` among them)."""
    return ofs[network].drop("real frames") / ofs.loc["real frames", network]


def ofs_sentences(ofs: pd.DataFrame, table: pd.DataFrame) -> str:
    """Per network, whether the OFS loss scores the real frames lowest and every wrong motion
    higher, or which wrong motions it scores no higher, beside the network's EPE and the zero flow's."""
    zero = table.loc["zero flow", "EPE (px)"]
    sentences = []
    for network in ofs.columns:
        wrong = wrong_motion_ratios(ofs, network)
        if wrong.min() > 1:
            verdict = (f"scores the real frames lowest and every wrong motion higher ({wrong.min():.2f}× to "
                       f"{wrong.max():.2f}×)")
        else:
            verdict = (f"scores {listed(wrong.index[wrong <= 1])} no higher than the real frames "
                       f"({wrong.min():.2f}× to {wrong.max():.2f}× the real frames' loss)")
        if (wrong - 1).abs().max() < SAME_LOSS:
            verdict += f": nearly the same loss for all {len(wrong) + 1} (within {SAME_LOSS:.0%})"
        epe = f"its EPE is {table.loc[network, 'EPE (px)']:.3f} px" if network in table.index else "it has no EPE"
        sentences.append(f"`{network}` {verdict}; {epe}, the zero flow's {zero:.3f}.")
    return " ".join(sentences)


def _interval_cell(summary: Mapping, digits: int = 2) -> str:
    low, high = summary["interval"]
    return f"{summary['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def syllable_table(similarity: Mapping[str, Mapping]) -> pd.DataFrame:
    """Figure 1's claim as a table, one line per descriptor (lip flow, image): the similarity of a
    syllable to the same syllable on other faces and to other syllables on the same face, their
    paired difference, and how often the nearest clip of another identity says the same syllable;
    each a mean with its 95% interval (``corpus.syllables.syllable_similarity``)."""
    return pd.DataFrame({name: {
        "same syllable, other identities": _interval_cell(s["same_syllable_across_identities"]),
        "other syllables, same identity": _interval_cell(s["other_syllables_same_identity"]),
        "difference (paired)": _interval_cell(s["difference"]),
        "nearest other identity says the same syllable": _interval_cell(s["retrieval"]),
    } for name, s in similarity.items()}).T


def syllable_sentence(similarity: Mapping[str, Mapping], syllables: int, identities: int) -> str:
    """Whether the lip flow of a syllable is closer to the same syllable on another face than to
    another syllable on the same face (the paper's Figure 1), and whether the images do the
    opposite, each judged by its interval."""
    flow, image = similarity["lip flow"], similarity["image"]
    flow_speaks = flow["difference"]["interval"][0] > 0
    image_identifies = image["difference"]["interval"][1] < 0
    return (
        f"{flow['occurrences']} occurrences of {syllables} syllables by {identities} identities "
        f"(chance retrieval {flow['chance']:.2f}). "
        + ("The lip flow of a syllable is more like the same syllable on another face than like another syllable "
           "on the same face (the interval of the difference lies above 0), as the paper's Figure 1 says. "
           if flow_speaks else
           "The lip flow does not tell syllables apart across faces better than faces apart (the interval of the "
           "difference reaches 0 or below), against what the paper's Figure 1 says. ")
        + ("The images do the opposite: one face saying other syllables looks more alike than another face "
           "saying the same one, so the image carries the identity and the flow the speech."
           if image_identifies else
           "The images do not separate identity from speech the other way round here."))
