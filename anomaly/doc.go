// Package anomaly holds the detectors behind the rule language's anomaly functions and
// fleet outliers: pure, deterministic and allocation-free per point once warmed up.
//
//   - [Spike]: spike/dip score of each point against a trailing history (robust z-score
//     over a rolling median and MAD).
//   - [ChangePoint]: lasting change of level or spread over a trailing history (two-part
//     robust mean-shift and scale test).
//   - [Outliers]: the members of a peer group whose vectors of one or more fields stand apart
//     (robust Mahalanobis distance, MCD-lite), tuned by one knob, the expected outlier share.
//
// The per-series detectors keep their history as state (AppendState/ReadState), so a rule's
// checkpoint restores them exactly and a replay gives the same scores. rules/sql and
// streams/window wire them into rules (SPIKE(x, confidence, n).score, OUTLIERS(...) BY ...).
package anomaly
