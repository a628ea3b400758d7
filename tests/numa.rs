//! NUMA nodes (`vmm run --numa`, issue 18): the VMM describes them in ACPI
//! SRAT and SLIT, the guest reads them at boot and shows them
//! (`numa` on its command line: `numactl --hardware`), the host reads the
//! same tables from guest memory (`--inspect numa`) and the two agree;
//! bad specs are refused with exit status 2 and a message that says why.

mod common;
use common::*;

use serde_json::Value;

/// The guest's `numactl --hardware` lines: the node lines and the
/// distance matrix (what the host's view must print the same).
fn topology_lines(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut in_matrix = false;
    for l in text.lines() {
        let l = l.trim_end();
        if l.starts_with("available:") || (l.starts_with("node ") && (l.contains(" cpus:") || l.contains(" size:"))) {
            v.push(l.to_string());
        }
        if l == "node distances:" {
            in_matrix = true;
            v.push(l.to_string());
            continue;
        }
        if in_matrix {
            let header = l.strip_prefix("node").is_some_and(|r| r.split_whitespace().all(|n| n.parse::<u32>().is_ok()));
            let row = l.split_once(':').is_some_and(|(n, rest)| {
                n.trim().parse::<u32>().is_ok() && rest.split_whitespace().all(|d| d.parse::<u32>().is_ok())
            });
            if header || row {
                v.push(l.to_string());
            } else {
                in_matrix = false;
            }
        }
    }
    v
}

#[test]
fn two_nodes_boot_and_guest_and_host_agree() {
    let dir = std::env::temp_dir().join(format!("mmemu-numa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let console = dir.join("console");
    let console_arg = console.to_str().unwrap();
    let r = boot(&[
        "--mem",
        "256M",
        "--cpus",
        "2",
        "--numa",
        "2",
        "--cmdline",
        "numa checkpoint=boot exit=0",
        "--inspect-at",
        "boot",
        "--inspect",
        "numa",
        "--console",
        console_arg,
    ]);
    let guest = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(r.status, 0, "{}\n--- console\n{guest}", r.all());
    // The VMM says what it did with the host's nodes.
    assert!(r.stderr.contains("vmm: NUMA: "), "{}", r.all());
    // The guest read the SRAT at boot, as Linux prints it.
    assert!(guest.contains("ACPI: SRAT: Node 0 PXM 0 [mem 0x00000000-0x07ffffff]"), "{guest}");
    assert!(guest.contains("ACPI: SRAT: Node 1 PXM 1 [mem 0x08000000-0x0fffffff]"), "{guest}");
    assert!(guest.contains("NUMA: node 1 fallback order: 1 0"), "{guest}");
    // Its numactl --hardware: two nodes, one CPU each, 128 MB each.
    let g = topology_lines(&guest);
    for want in [
        "available: 2 nodes (0-1)",
        "node 0 cpus: 0",
        "node 0 size: 128 MB",
        "node 1 cpus: 1",
        "node 1 size: 128 MB",
        "node   0   1",
        "  0:  10  20",
        "  1:  20  10",
    ] {
        assert!(g.iter().any(|l| l == want), "guest lacks '{want}': {g:?}\n{guest}");
    }
    // The host's view, read from guest memory on its own, says the same.
    let h = topology_lines(&r.stdout);
    assert_eq!(h, g, "host view:\n{}\nguest:\n{guest}", r.stdout);
    assert!(r.stdout.contains("node 1 PXM 1: [mem 0x08000000-0x0fffffff]"), "{}", r.stdout);
    assert!(!r.stdout.contains("lie in no node"), "{}", r.stdout);
    // Free memory per node: the kernel sits low, in node 0, so node 1 is
    // almost all free and node 0 less so (figures from the guest).
    let free = |n: u32| -> u64 {
        let p = format!("node {n} free: ");
        let l = guest.lines().find(|l| l.starts_with(&p)).unwrap_or_else(|| panic!("no '{p}' in {guest}"));
        l[p.len()..].trim_end_matches(" MB").parse().unwrap()
    };
    assert!(free(1) > 100 && free(1) <= 128, "node 1 free {} MB\n{guest}", free(1));
    assert!(free(0) < free(1), "node 0 holds the kernel: {} < {}", free(0), free(1));
    assert!(guest.contains("Node 1 MemTotal:        131072 kB"), "{guest}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explicit_nodes_as_json_and_without_numa() {
    let r = boot(&[
        "--mem",
        "192M",
        "--cpus",
        "3",
        "--numa",
        "0=64M,1=128M,cpus=0+2:1,distance=10:31",
        "--cmdline",
        "checkpoint=boot exit=0",
        "--inspect-at",
        "boot",
        "--inspect",
        "numa",
        "--json",
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    let v: Vec<Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let numa = &v.iter().find(|v| v["view"] == "numa").unwrap_or_else(|| panic!("{}", r.all()))["data"];
    let nodes = numa["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{numa}");
    let ranges = |i: usize| -> Vec<(u64, u64)> {
        nodes[i]["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(ranges(0), vec![(0, 64 << 20)]);
    assert_eq!(ranges(1), vec![(64 << 20, 192 << 20)]);
    assert_eq!(nodes[0]["cpus"], serde_json::json!([0, 2]));
    assert_eq!(nodes[1]["cpus"], serde_json::json!([1]));
    assert_eq!(numa["distance"], serde_json::json!([[10, 31], [31, 10]]));
    assert_eq!(numa["slit_used"], true);
    assert_eq!(numa["frames_outside_nodes"], 0);
    // Every free page the buddy allocator holds is in one of the nodes.
    let free: u64 = nodes.iter().map(|n| n["free_pages"].as_u64().unwrap()).sum();
    assert!(free > 0, "{numa}");

    // Without --numa: no SRAT, one node as far as anyone can tell.
    let r = boot(&["--cmdline", "numa exit=0"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("No NUMA available on this system"), "{}", r.all());
}

#[test]
fn bad_specs_exit_2_and_say_why() {
    for (args, why) in [
        (&["--mem", "256M", "--numa", "0=1G,1=1G"][..], "the nodes hold 2 GiB but --mem is 256 MiB"),
        (&["--mem", "256M", "--numa", "0=256M,1=0"], "node 1 has no memory"),
        (&["--mem", "256M", "--numa", "0=128M,1=128M,distance=10:5"], "a remote distance is 11 to 254"),
        (&["--mem", "256M", "--numa", "0=128M,1=128M,distance=10:20:30:10"], "must be symmetric"),
        (&["--mem", "256M", "--cpus", "2", "--numa", "0=128M,1=128M,cpus=0:3"], "vCPU 3 does not exist"),
        (&["--mem", "256M", "--numa", "0=128M,2=128M"], "node 1 has no size"),
        (&["--mem", "256M", "--numa", "9"], "9 nodes"),
        (&["--mem", "256M", "--numa", "two"], "'two' is not NODE=SIZE"),
    ] {
        let mut a = vec!["run", "--timeout", "60"];
        a.extend_from_slice(args);
        let r = vmm(&a);
        assert_eq!(r.status, 2, "{args:?}: {}", r.all());
        assert!(r.stderr.contains(why), "{args:?}: wanted '{why}': {}", r.all());
    }
    // More nodes than CPUs is fine: the last nodes have none.
    let r = boot(&["--mem", "64M", "--numa", "2", "--cmdline", "numa exit=0"]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("node 0 cpus: 0\n"), "{}", r.all());
    assert!(r.stdout.contains("node 1 cpus:\n"), "{}", r.all());
}
