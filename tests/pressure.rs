//! Memory pressure on the real VMM and guest (issue 13, the part without
//! swap): three `memhog` processes in an 8 MiB guest that cannot hold
//! them all. The OOM killer must pick the victim Linux's `oom_badness`
//! picks (the biggest, or the one whose oom_score_adj says so), print
//! Linux's lines, reap it, let the others finish with their memory intact,
//! and the kernel must run on to a clean power-off. kswapd must have been
//! woken, and the host's `vmstat` view (read from the guest's descriptor)
//! must show the same counters the guest printed.

mod common;
use common::*;

/// The scenario's hogs as the guest announced them: (pid, pages, adj).
fn started(out: &str) -> Vec<(u64, u64, i64)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("oom: started pid "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            // "N (memhog) pages P oom_score_adj A"
            (w[0].parse().unwrap(), w[3].parse().unwrap(), w[5].parse().unwrap())
        })
        .collect()
}

fn run(variant: &str) -> Run {
    let r = boot(&["--mem", "8M", "--cmdline", &format!("{variant} checkpoint=after"), "--inspect", "vmstat"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("oom: scenario passed"), "{}", r.all());
    assert!(r.stdout.contains("mmemu: all done, powering off"), "the kernel must run on: {}", r.all());
    r
}

/// Linux's kill report for `pid`, checked field by field; returns the line.
fn assert_killed_line(out: &str, pid: u64, adj: i64) -> String {
    let prefix = format!("Out of memory: Killed process {pid} (memhog) total-vm:");
    let line = out.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no kill line for {pid}:\n{out}"));
    let rest = &line[prefix.len()..];
    let kb = |field: &str| -> u64 {
        let at = rest.find(field).unwrap_or_else(|| panic!("{field} missing in {line}")) + field.len();
        rest[at..].split("kB").next().unwrap().parse().unwrap_or_else(|_| panic!("bad {field} in {line}"))
    };
    assert!(kb("anon-rss:") > 0, "{line}");
    assert!(kb("pgtables:") > 0, "{line}");
    assert!(rest.contains(", file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:"), "{line}");
    assert!(line.ends_with(&format!(" oom_score_adj:{adj}")), "{line}");
    assert_eq!(out.matches("Out of memory: Killed process").count(), 1, "exactly one kill:\n{out}");
    // The summary comes before the kill, as Linux's dump_header.
    let header = out.find("memhog invoked oom-killer: gfp_mask=").expect("invoked line");
    let mem_info = out.find("Mem-Info:").expect("Mem-Info");
    let tasks = out.find("Tasks state (memory values in pages):").expect("task table");
    let kill = out.find(&prefix).unwrap();
    assert!(header < mem_info && mem_info < tasks && tasks < kill, "{out}");
    assert!(out.contains("oom-kill:constraint=CONSTRAINT_NONE,"), "{out}");
    line.to_string()
}

fn assert_fates(out: &str, hogs: &[(u64, u64, i64)], victim: u64) {
    for &(pid, pages, _) in hogs {
        if pid == victim {
            assert!(out.contains(&format!("oom: pid {pid} (memhog) killed by signal 9")), "{out}");
        } else {
            assert!(out.contains(&format!("oom: pid {pid} (memhog) exited with status 0")), "{pid}: {out}");
            // The survivor read back every page it wrote.
            assert!(out.contains(&format!("memhog[{pid}]: {pages} pages verified, done")), "{pid}: {out}");
        }
    }
}

#[test]
fn the_biggest_process_is_oom_killed_and_the_others_finish() {
    let r = run("oom");
    let out = &r.stdout;
    let hogs = started(out);
    assert_eq!(hogs.len(), 3, "{out}");
    // The unbounded hog (pages 0) is the biggest when memory runs out.
    let big = hogs.iter().find(|h| h.1 == 0).expect("an unbounded hog").0;
    assert_killed_line(out, big, 0);
    assert_fates(out, &hogs, big);
    // The task table lists every hog before the kill.
    for &(pid, _, _) in &hogs {
        assert!(out.lines().any(|l| l.starts_with(&format!("[{pid}] 0 {pid} "))), "{pid} not in the table: {out}");
    }
    // kswapd was woken (the slow path's wake) and ran; the host reads the
    // same counters from the descriptor at the checkpoint after the run.
    let host = "--- checkpoint 'after': vmstat ---";
    assert_eq!(counter_after(out, host, "oom_kill"), 1, "{out}");
    assert!(counter_after(out, host, "kswapd_wake") >= 1, "{out}");
    assert!(counter_after(out, host, "pageoutrun") >= 1, "{out}");
    for name in ["pgfault", "oom_kill", "kswapd_wake", "allocstall"] {
        assert_eq!(
            counter_after(out, "oom: pid", name),
            counter_after(out, host, name),
            "guest and host disagree on {name}: {out}"
        );
    }
    // Swap and LRU counters exist and stay zero without swap.
    for name in ["pswpin", "pswpout", "pgmajfault", "pgsteal_kswapd", "pgsteal_direct"] {
        assert_eq!(counter_after(out, host, name), 0, "{out}");
    }
}

#[test]
fn oom_score_adj_changes_the_victim() {
    let r = run("oom=adj");
    let out = &r.stdout;
    let hogs = started(out);
    assert_eq!(hogs.len(), 3, "{out}");
    let adjusted = hogs.iter().find(|h| h.2 == 1000).expect("a hog with oom_score_adj 1000");
    let biggest = hogs.iter().max_by_key(|h| h.1).unwrap();
    assert!(biggest.1 > adjusted.1 && biggest.0 != adjusted.0, "the adjusted hog must not be the biggest: {hogs:?}");
    assert_killed_line(out, adjusted.0, 1000);
    // It was not running when killed: the reaper freed its memory at once.
    assert!(
        out.contains(&format!(
            "oom_reaper: reaped process {} (memhog), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
            adjusted.0
        )),
        "{out}"
    );
    assert_fates(out, &hogs, adjusted.0);
    assert_eq!(counter_after(out, "--- checkpoint 'after': vmstat ---", "oom_kill"), 1, "{out}");
}

#[test]
fn the_host_vmstat_view_is_json_too() {
    let r = boot(&["--mem", "8M", "--cmdline", "vmstat checkpoint=after", "--inspect", "vmstat", "--json"]);
    assert_eq!(r.status, 0, "{}", r.all());
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("\"checkpoint\":\"after\"") && l.contains("\"view\":\"vmstat\""))
        .unwrap_or_else(|| panic!("no JSON vmstat view: {}", r.all()));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let counters = v["data"]["counters"].as_array().unwrap();
    let names: Vec<&str> = counters.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, mm_core::descriptor::VM_EVENT_NAMES.to_vec());
    assert!(counters.iter().all(|c| c["value"].is_u64()), "{line}");
}
