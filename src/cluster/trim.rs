//! What the leader may remove from the journal stream, from the nodes'
//! reports (`super::nodes`): pure, no I/O.
//!
//! A node reports the stream sequence up to which its local store holds
//! everything (its `cluster-position` file, synced). When it starts
//! again it reads the stream from the message after that one (or, with
//! no position file, from the message after its store's last batch,
//! which is no earlier), so the stream must keep every message after the
//! least report: the leader removes the messages up to the least report,
//! never the last message (the next append's expectation is checked
//! against it). A node that never reported does not count: it joins with
//! a copied data dir, or from sequence 1 while nothing was removed, and
//! stops with a message if the stream no longer holds what it needs. A
//! report that cannot be read stops trimming until it is mended or
//! forgotten: what it would hold back is unknown.

use super::nodes::ReadReport;

/// The least report, and the node that made it (what holds trimming back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Floor {
    pub node: String,
    pub stream_seq: u64,
}

/// Why no floor can be taken from the reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FloorError {
    #[error("no node has reported where its store stands")]
    NoReports,
    #[error("{why}: nothing is trimmed until it is reported again or forgotten (cluster-forget --node-id {node})")]
    Unreadable { node: String, why: String },
}

/// The least of `reports` (ties: the node id first in order).
pub fn floor(reports: &[(String, ReadReport)]) -> Result<Floor, FloorError> {
    let mut least: Option<Floor> = None;
    for (node, report) in reports {
        let report = report.as_ref().map_err(|why| FloorError::Unreadable {
            node: node.clone(),
            why: why.clone(),
        })?;
        let lower = least
            .as_ref()
            .is_none_or(|l| (report.stream_seq, node.as_str()) < (l.stream_seq, l.node.as_str()));
        if lower {
            least = Some(Floor {
                node: node.clone(),
                stream_seq: report.stream_seq,
            });
        }
    }
    least.ok_or(FloorError::NoReports)
}

/// The last sequence to remove from a stream holding `bounds` (first,
/// last) when every node holds everything up to `floor`: `None` when
/// nothing may go. Never the last message.
pub fn purge_through(floor: u64, bounds: Option<(u64, u64)>) -> Option<u64> {
    let (first, last) = bounds?;
    let through = floor.min(last.checked_sub(1)?);
    (through >= first).then_some(through)
}

/// Whether the node holding trimming back lags far enough behind the
/// stream's end to be told at warn: `lag_messages` messages or more.
pub fn lags_far(floor: u64, last: u64, lag_messages: u64) -> bool {
    last.saturating_sub(floor) >= lag_messages
}

#[cfg(test)]
mod tests {
    use super::super::nodes::NodeReport;
    use super::*;

    fn report(node: &str, stream_seq: u64) -> (String, ReadReport) {
        (
            node.to_owned(),
            Ok(NodeReport {
                stream_seq,
                record_seq: stream_seq * 10,
            }),
        )
    }

    #[test]
    fn the_floor_is_the_least_report_and_names_its_node() {
        // proves the floor is the minimum over every report (not the first or the leader's), with ties broken by node id
        let reports = [report("c", 90), report("a", 40), report("b", 70)];
        assert_eq!(
            floor(&reports),
            Ok(Floor {
                node: "a".into(),
                stream_seq: 40
            })
        );
        let tied = [report("z", 5), report("m", 5), report("q", 6)];
        assert_eq!(floor(&tied).map(|f| f.node), Ok("m".to_owned()));
        assert_eq!(
            floor(&[report("only", 0)]).map(|f| f.stream_seq),
            Ok(0),
            "a node that reported 0 (joined from sequence 1) holds everything back"
        );
    }

    #[test]
    fn no_report_or_an_unreadable_one_gives_no_floor() {
        // proves trimming never proceeds without a report, nor past a report it cannot read, whatever the others say
        assert_eq!(floor(&[]), Err(FloorError::NoReports));
        let reports = [
            report("a", 40),
            ("b".to_owned(), Err("garbled".to_owned())),
            report("c", 90),
        ];
        assert!(matches!(
            floor(&reports),
            Err(FloorError::Unreadable { node, .. }) if node == "b"
        ));
    }

    #[test]
    fn the_purge_goes_up_to_the_floor_and_never_takes_the_last_message() {
        // proves what is removed is at most the floor, never the last message, and nothing when nothing lies below the floor
        assert_eq!(purge_through(50, Some((1, 100))), Some(50));
        assert_eq!(purge_through(50, Some((20, 100))), Some(50));
        assert_eq!(
            purge_through(100, Some((1, 100))),
            Some(99),
            "the last stays"
        );
        assert_eq!(purge_through(500, Some((1, 100))), Some(99));
        assert_eq!(purge_through(19, Some((20, 100))), None, "already gone");
        assert_eq!(purge_through(20, Some((20, 100))), Some(20));
        assert_eq!(purge_through(0, Some((1, 100))), None);
        assert_eq!(
            purge_through(9, Some((9, 9))),
            None,
            "only the last is left"
        );
        assert_eq!(purge_through(9, None), None);
    }

    #[test]
    fn for_every_small_stream_and_floor_what_remains_is_everything_after_the_floor_and_the_last() {
        // proves exhaustively over small streams that every message after the floor, and the last, survive the purge
        for first in 1..8u64 {
            for last in first..12 {
                for f in 0..14 {
                    let after = match purge_through(f, Some((first, last))) {
                        Some(through) => {
                            assert!(through >= first && through < last && through <= f);
                            through + 1
                        }
                        None => first,
                    };
                    assert!(after <= f.saturating_add(1).max(first), "kept after {f}");
                    assert!(after <= last, "the last is kept");
                }
            }
        }
    }

    #[test]
    fn a_holder_lags_far_once_the_stream_runs_the_given_count_past_it() {
        // proves the warn threshold is inclusive and never underflows when a report is past the stream's end
        assert!(lags_far(0, 10_000, 10_000));
        assert!(!lags_far(1, 10_000, 10_000));
        assert!(!lags_far(50, 10, 10_000));
    }
}
