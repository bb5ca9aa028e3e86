use super::*;

fn figures(p99_ms: u64) -> Figures {
    Figures {
        confirmed: 1_000,
        late: 0,
        errors: 0,
        p99: Duration::from_millis(p99_ms),
    }
}

#[test]
fn a_step_holds_under_the_p99_bound_drained_and_without_errors() {
    assert_eq!(judge(figures(99)), Verdict::Held);
    let Verdict::Failed(why) = judge(figures(100)) else {
        panic!("a p99 of exactly 100 ms does not hold");
    };
    assert_eq!(why, ["p99 100.00 ms >= 100.00 ms"]);
}

#[test]
fn a_backlog_left_or_an_error_fails_a_fast_step() {
    let late = Figures {
        late: 3,
        ..figures(5)
    };
    let Verdict::Failed(why) = judge(late) else {
        panic!("three orders late is not drained");
    };
    assert!(
        why[0].contains("3 orders not confirmed within 10 s"),
        "{why:?}"
    );
    let errors = Figures {
        errors: 1,
        ..figures(5)
    };
    assert_eq!(judge(errors), Verdict::Failed(vec!["1 errors".into()]));
}

#[test]
fn a_step_that_confirmed_nothing_is_no_evidence() {
    let empty = Figures {
        confirmed: 0,
        p99: Duration::ZERO,
        ..figures(0)
    };
    assert!(!judge(empty).held());
}

#[test]
fn every_reason_is_given() {
    let all = Figures {
        confirmed: 10,
        late: 990,
        errors: 7,
        p99: Duration::from_secs(9),
    };
    let Verdict::Failed(why) = judge(all) else {
        panic!("fails");
    };
    assert_eq!(why.len(), 3, "{why:?}");
}

#[test]
fn the_table_has_every_step_under_its_columns_and_the_result() {
    use super::super::costs::Costs;
    use super::super::stats::Latencies;

    let mut visible = Latencies::new().unwrap();
    let mut command = Latencies::new().unwrap();
    for ms in 1..=100 {
        visible.record(Duration::from_millis(ms));
        command.record(Duration::from_millis(ms / 10 + 1));
    }
    let step = |rate: f64, verdict: Verdict| Step {
        propagation: Propagation {
            name: "order placed -> confirmed".into(),
            rate,
            visible: visible.clone(),
            command: command.clone(),
            probe: "read-model table query".into(),
            probe_requests: 100,
            elapsed: Duration::from_secs(10),
            max_lag: Duration::from_millis(3),
            consumers: Vec::new(),
            horizon: None,
            acked: 100,
            costs: Some(Costs {
                orders: 100,
                commits: 3_100,
                own_queries: 100,
                postgres_cpu: Duration::from_millis(250),
                probe_cpu: Duration::from_millis(90),
            }),
        },
        late: 0,
        drained_after: Some(Duration::from_millis(40)),
        usage: Usage {
            wall: Duration::from_secs(10),
            machine_busy: 1.0,
            steal: 0.0,
            groups: vec![(POSTGRES_OURS.to_owned(), 0.5)],
            other: 0.0,
        },
        verdict,
    };
    let capacity = Capacity {
        step_seconds: 10.0,
        steps: vec![
            step(100.0, Verdict::Held),
            step(
                200.0,
                Verdict::Failed(vec!["p99 120.00 ms >= 100.00 ms".into()]),
            ),
        ],
        untried: vec![500.0],
    };
    let table = capacity.table();
    let lines: Vec<&str> = table.lines().collect();
    let (header, first) = (lines[1], lines[2]);
    for (column, value) in [
        ("verdict", "held"),
        ("net", "30.0"),
        ("commits/order", "31.0"),
    ] {
        let end = |line: &str, cell: &str| line.find(cell).map(|at| at + cell.len());
        let column_end = end(header, column).unwrap();
        let value_end = end(first, value).unwrap();
        if column == "verdict" {
            assert_eq!(header.find(column), first.find(value), "{table}");
        } else {
            assert_eq!(column_end, value_end, "{column}:\n{table}");
        }
    }
    assert!(first.contains("100/s") && first.contains("2.50"), "{table}");
    assert!(
        lines[3].contains("200/s") && lines[3].ends_with("FAILED"),
        "{table}"
    );
    assert!(table.contains("200/s FAILED: p99 120.00 ms"), "{table}");
    assert!(table.contains("not tried: 500/s"), "{table}");
    assert!(table.ends_with("saga capacity: 100 orders/s (the highest step with placed -> confirmed p99 < 100.00 ms that drained)"), "{table}");
}

#[test]
fn the_capacity_is_the_highest_step_that_held() {
    let (held, failed) = (Verdict::Held, Verdict::Failed(vec!["x".into()]));
    assert_eq!(
        highest_held([(100.0, &held), (200.0, &held), (500.0, &failed)]),
        Some(200.0)
    );
    assert_eq!(highest_held([(500.0, &held), (100.0, &held)]), Some(500.0));
    assert_eq!(highest_held([(100.0, &failed)]), None);
    assert_eq!(highest_held([]), None);
}
