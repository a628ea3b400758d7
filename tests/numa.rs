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

/// Linux's per-node files in /sys/devices/system/node, read from the
/// ring-3 shell on a 2-node, 2-CPU guest.
#[test]
fn per_node_sysfs_files_as_linux() {
    let script = "ls /sys/devices/system/node\ncat /sys/devices/system/node/online\n\
                  cat /sys/devices/system/node/node1/meminfo\ncat /sys/devices/system/node/node0/distance\n\
                  cat /sys/devices/system/node/node1/cpulist\ncat /sys/devices/system/node/node0/numastat\n\
                  cat /sys/devices/system/node/node2/meminfo\nexit\n";
    let run = vmm_with_input(
        &["run", "--timeout", "240", "--mem", "256M", "--cpus", "2", "--numa", "0=128M,1=128M,cpus=0:1", "--shell"],
        Some(script),
    );
    assert_eq!(run.status, 0, "{}", run.all());
    let out = &run.stdout;
    for want in ["node0/\n", "node1/\n", "online\n", "has_normal_memory\n"] {
        assert!(out.contains(want), "ls lists {want:?}: {out}");
    }
    assert!(out.contains("# cat /sys/devices/system/node/online\n0-1\n"), "{out}");
    // Linux's "Node %d MemTotal:       %8lu kB".
    assert!(out.contains("Node 1 MemTotal:         131072 kB\n"), "{out}");
    let free: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Node 1 MemFree:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(free > 100 << 10 && free <= 128 << 10, "node 1 is mostly free: {free} kB\n{out}");
    assert!(out.contains("Node 1 Inactive(anon):"), "{out}");
    assert!(out.contains("# cat /sys/devices/system/node/node0/distance\n10 20\n"), "{out}");
    assert!(out.contains("# cat /sys/devices/system/node/node1/cpulist\n1\n"), "{out}");
    let hit: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("numa_hit "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(hit > 0, "{out}");
    assert!(out.contains("cat: /sys/devices/system/node/node2/meminfo: No such file or directory"), "{out}");
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
    // The VMM says what it did with the host's nodes: on a one-node host
    // (as this one) why it bound nothing, else the binding.
    let host = std::fs::read_to_string("/sys/devices/system/node/has_normal_memory").unwrap_or_default();
    if host.trim() == "0" {
        assert!(
            r.stderr.contains(
                "vmm: NUMA: the host has 1 NUMA node (node 0, /sys/devices/system/node/has_normal_memory): nothing to bind"
            ),
            "{}",
            r.all()
        );
    } else if !host.trim().is_empty() {
        assert!(r.stderr.contains("vmm: NUMA: memory bound with mbind(MPOL_BIND)"), "{}", r.all());
    }
    // The guest read the SRAT at boot, as Linux prints it.
    assert!(guest.contains("ACPI: SRAT: Node 0 PXM 0 [mem 0x00000000-0x07ffffff]"), "{guest}");
    assert!(guest.contains("ACPI: SRAT: Node 1 PXM 1 [mem 0x08000000-0x0fffffff]"), "{guest}");
    assert!(guest.contains("NUMA: node 1 fallback order: 1 0"), "{guest}");
    assert!(guest.contains("smp: Brought up 2 nodes, 2 CPUs"), "{guest}");
    // numastat after numactl's view: a column per node, Linux's rows; the
    // boot allocated on CPU 0 (node 0), locally.
    let row = |name: &str| -> Vec<u64> {
        let l = guest.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {guest}"));
        l.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()
    };
    assert!(guest.lines().any(|l| l.split_whitespace().eq(["node0", "node1"])), "{guest}");
    assert!(row("numa_hit")[0] > 0, "{guest}");
    assert_eq!(row("numa_miss"), [0, 0], "{guest}");
    assert_eq!(row("numa_foreign"), [0, 0], "{guest}");
    assert_eq!(row("interleave_hit"), [0, 0], "{guest}");
    assert_eq!(row("local_node")[0], row("numa_hit")[0], "{guest}");
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
    assert!(guest.contains("Node 1 MemTotal:         131072 kB"), "{guest}");
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

/// `--inspect physmap` with `--numa 2`: the picture bands each row by
/// node and names both; the JSON counts each node's frames per owner
/// class, which add up to the overall counts, and each node's frames total
/// its SRAT size. Without `--numa` there are no node counts or bands.
#[test]
fn physmap_is_coloured_by_node() {
    let dir = Scratch::new("numa-physmap");
    let view = format!("physmap:{}", dir.0.display());
    let r = boot(&[
        "--mem",
        "256M",
        "--cpus",
        "2",
        "--numa",
        "0=96M,1=160M",
        "--cmdline",
        "checkpoint=boot exit=0",
        "--inspect-at",
        "boot",
        "--inspect",
        &view,
        "--json",
    ]);
    assert_eq!(r.status, 0, "{}", r.all());
    let v: Vec<Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let pm = &v.iter().find(|v| v["view"] == "physmap").unwrap_or_else(|| panic!("{}", r.all()))["data"];
    let total = pm["frames"].as_object().unwrap();
    let nodes = pm["nodes"].as_array().unwrap_or_else(|| panic!("no node counts: {pm}"));
    assert_eq!(nodes.len(), 2, "{pm}");
    for (i, mib) in [(0, 96u64), (1, 160)] {
        assert_eq!(nodes[i]["node"], i, "{pm}");
        assert_eq!(nodes[i]["srat_frames"].as_u64(), Some(mib << 8), "{pm}");
        let sum: u64 = nodes[i]["frames"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(sum, mib << 8, "node {i}'s frames total its SRAT size: {pm}");
    }
    for (class, n) in total {
        let per_node: u64 = nodes.iter().map(|v| v["frames"][class].as_u64().unwrap_or(0)).sum();
        assert_eq!(per_node, n.as_u64().unwrap(), "{class}: the nodes add up to the whole: {pm}");
    }
    // The kernel's text sits low, in node 0; node 1 is mostly free.
    assert!(nodes[0]["frames"]["kernel-text"].as_u64().unwrap_or(0) > 0, "{pm}");
    assert_eq!(nodes[1]["frames"]["kernel-text"].as_u64().unwrap_or(0), 0, "{pm}");
    let svg = std::fs::read_to_string(pm["svg"].as_str().unwrap()).unwrap();
    for n in [0, 1] {
        assert!(svg.contains(&format!("NUMA node {n} —")), "legend names node {n}");
        assert!(svg.contains(&format!(">node {n}</text>")), "a band is labelled node {n}");
    }

    // Without --numa: the same view, with no node counts or bands.
    let r = boot(&["--cmdline", "checkpoint=boot exit=0", "--inspect-at", "boot", "--inspect", &view]);
    assert_eq!(r.status, 0, "{}", r.all());
    assert!(r.stdout.contains("physmap: wrote"), "{}", r.all());
    assert!(!r.stdout.contains("in its SRAT ranges"), "{}", r.all());
    let svg = std::fs::read_to_string(dir.0.join("physmap-boot.svg")).unwrap();
    assert!(!svg.contains("NUMA node"), "no node bands without --numa");
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

/// The memory-policy program: errno cases first, then local allocation
/// (numa_miss before and after), an interleaved mapping (mbind), a
/// task-bound one (set_mempolicy), get_mempolicy's answers, numa_maps,
/// and a checkpoint with the pages mapped for the host to walk.
const POLICY: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_DEFAULT 0
#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define MPOL_INTERLEAVE 3
#define MPOL_LOCAL 4
#define MPOL_F_NODE 1
#define MPOL_F_ADDR 2
#define MPOL_F_MEMS_ALLOWED 4
#define MPOL_MF_STRICT 1

#define IL ((char *)0x200000000UL)
#define BD ((char *)0x210000000UL)
#define LC ((char *)0x220000000UL)
#define N 8

static long e(long r) { return r < 0 ? -errno : r; }
static long setpol(long mode, unsigned long *mask, unsigned long maxnode) {
    return e(syscall(SYS_set_mempolicy, mode, mask, maxnode));
}
static long getpol(int *mode, unsigned long *mask, unsigned long maxnode, void *addr, unsigned long flags) {
    return e(syscall(SYS_get_mempolicy, mode, mask, maxnode, addr, flags));
}
static long mbind_(void *a, unsigned long len, long mode, unsigned long *mask, unsigned long maxnode, unsigned flags) {
    return e(syscall(SYS_mbind, a, len, mode, mask, maxnode, flags));
}
static unsigned long vmstat(const char *name) {
    char buf[8192];
    int fd = open("/proc/vmstat", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    size_t l = strlen(name);
    for (char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : 0)
        if (!strncmp(p, name, l) && p[l] == ' ') return strtoul(p + l + 1, 0, 10);
    return ~0UL;
}
static char *map(char *at) {
    return mmap(at, N * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}
static void cat(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY), n;
    while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
    close(fd);
}

int main(void) {
    unsigned long m0 = 1, m1 = 2, m01 = 3, m2 = 4, empty = 0, big[2] = {1, 1};
    int mode = -1;
    unsigned long mask = 0;
    setvbuf(stdout, 0, _IONBF, 0);
    printf("set bad mode %ld\n", setpol(5, &m01, 3));
    printf("set bind empty %ld\n", setpol(MPOL_BIND, &empty, 3));
    printf("set bind absent node %ld\n", setpol(MPOL_BIND, &m2, 4));
    printf("set bind bad pointer %ld\n", setpol(MPOL_BIND, (unsigned long *)8, 3));
    printf("set default with nodes %ld\n", setpol(MPOL_DEFAULT, &m0, 3));
    printf("set bind bit beyond the ABI mask %ld\n", setpol(MPOL_BIND, big, 129));
    printf("get bad flags %ld\n", getpol(&mode, 0, 0, 0, 8));
    printf("get maxnode too small %ld\n", getpol(&mode, &mask, 1, 0, 0));
    printf("get addr without MPOL_F_ADDR %ld\n", getpol(&mode, 0, 0, IL, 0));
    printf("get unmapped addr %ld\n", getpol(&mode, 0, 0, (void *)0x300000000UL, MPOL_F_ADDR));
    printf("get node of default %ld\n", getpol(&mode, 0, 0, 0, MPOL_F_NODE));

    /* Local allocation: default policy, numa_miss unchanged. */
    unsigned long miss0 = vmstat("numa_miss"), hit0 = vmstat("numa_hit");
    char *lc = map(LC);
    for (int i = 0; i < N; i++) lc[i * 4096] = 1;
    printf("local numa_miss delta %lu numa_hit grew %d\n", vmstat("numa_miss") - miss0, vmstat("numa_hit") > hit0);

    /* Interleave by mbind on a mapping. */
    char *il = map(IL);
    printf("mbind unaligned %ld\n", mbind_(IL + 1, 4096, MPOL_INTERLEAVE, &m01, 3, 0));
    printf("mbind hole %ld\n", mbind_(IL, 64 * 4096, MPOL_INTERLEAVE, &m01, 3, 0));
    printf("mbind bad flags %ld\n", mbind_(IL, 4096, MPOL_INTERLEAVE, &m01, 3, 8));
    printf("mbind bad mode %ld\n", mbind_(IL, 4096, 9, &m01, 3, 0));
    printf("mbind interleave %ld\n", mbind_(IL, N * 4096, MPOL_INTERLEAVE, &m01, 3, 0));
    unsigned long ilhit0 = vmstat("interleave_hit");
    for (int i = 0; i < N; i++) il[i * 4096] = 1;
    printf("interleave_hit delta %lu\n", vmstat("interleave_hit") - ilhit0);
    printf("get addr policy %ld", getpol(&mode, &mask, 64, IL, MPOL_F_ADDR));
    printf(" mode %d mask %lu\n", mode, mask);
    printf("interleaved nodes");
    for (int i = 0; i < N; i++) {
        getpol(&mode, 0, 0, il + i * 4096, MPOL_F_NODE | MPOL_F_ADDR);
        printf(" %d", mode);
    }
    printf("\n");

    /* Bind the task to node 1. */
    printf("set bind node 1 %ld\n", setpol(MPOL_BIND, &m1, 3));
    printf("get task policy %ld", getpol(&mode, &mask, 64, 0, 0));
    printf(" mode %d mask %lu\n", mode, mask);
    char *bd = map(BD);
    for (int i = 0; i < N; i++) bd[i * 4096] = 1;
    printf("bound nodes");
    for (int i = 0; i < N; i++) {
        getpol(&mode, 0, 0, bd + i * 4096, MPOL_F_NODE | MPOL_F_ADDR);
        printf(" %d", mode);
    }
    printf("\n");
    /* STRICT: the interleaved pages are not all on node 0. */
    printf("mbind strict bind node 0 over interleaved %ld\n", mbind_(IL, N * 4096, MPOL_BIND, &m0, 3, MPOL_MF_STRICT));
    printf("mbind bind node 1 over bound %ld\n", mbind_(BD, N * 4096, MPOL_BIND, &m1, 3, MPOL_MF_STRICT));
    printf("get mems allowed %ld", getpol(&mode, &mask, 64, 0, MPOL_F_MEMS_ALLOWED));
    printf(" mask %lu\n", mask);
    cat("/proc/self/numa_maps");
    cat("/proc/numastat");
    syscall(503, "numa-placed", 11);
    printf("set default %ld\n", setpol(MPOL_DEFAULT, 0, 0));
    return 0;
}
"#;

/// The node of guest-physical `pa` with `--numa 2 --mem 256M`.
fn node_of(pa: u64) -> u64 {
    pa / (128 << 20)
}

/// A JSON number or hex string ("0x...") as u64.
fn num(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()))
}

/// The first value under `key` anywhere in `v`.
fn find<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(key).or_else(|| m.values().find_map(|x| find(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

/// Guest-physical frames of `--inspect walk:ADDR` results (`--json`), as
/// (virtual address, guest-physical address).
fn walked_frames(out: &str) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for l in out.lines() {
        let Ok(j) = serde_json::from_str::<Value>(l) else { continue };
        if j["view"] != "walk" {
            continue;
        }
        let d = &j["data"];
        let (Some(va), Some(pa)) = (find(d, "va").and_then(num), find(d, "gpa").and_then(num)) else { continue };
        v.push((va, pa));
    }
    v
}

#[test]
fn memory_policies_place_pages_as_linux() {
    let dir = Scratch::new("numa-policy");
    let prog = compile("musl-gcc", POLICY, &dir.0, "policy", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let mut views = Vec::new();
    for base in [0x2_0000_0000u64, 0x2_1000_0000] {
        for i in 0..8 {
            views.push(format!("walk:{:#x}", base + i * 4096));
        }
    }
    let views = views.join(",");
    let r = boot(&[
        "--mem",
        "256M",
        "--cpus",
        "2",
        "--numa",
        "2",
        "--initrd",
        root.to_str().unwrap(),
        "--inspect-at",
        "numa-placed",
        "--inspect",
        &views,
        "--verify",
        "numa",
        "--json",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    // Linux's errno for bad input.
    for (what, errno) in [
        ("set bad mode", -22),
        ("set bind empty", -22),
        ("set bind absent node", -22),
        ("set bind bad pointer", -14),
        ("set default with nodes", -22),
        ("set bind bit beyond the ABI mask", -22),
        ("get bad flags", -22),
        ("get maxnode too small", -22),
        ("get addr without MPOL_F_ADDR", -22),
        ("get unmapped addr", -14),
        ("get node of default", -22),
        ("mbind unaligned", -22),
        ("mbind hole", -14),
        ("mbind bad flags", -22),
        ("mbind bad mode", -22),
        ("mbind strict bind node 0 over interleaved", -5),
    ] {
        assert!(out.contains(&format!("{what} {errno}\n")), "{what}: want {errno}\n{out}");
    }
    assert!(out.contains("local numa_miss delta 0 numa_hit grew 1"), "{out}");
    assert!(out.contains("mbind interleave 0\n"), "{out}");
    assert!(out.contains("interleave_hit delta 8\n"), "{out}");
    assert!(out.contains("get addr policy 0 mode 3 mask 3"), "{out}");
    // 0x200000000's page offset is even: page i on node i % 2.
    assert!(out.contains("interleaved nodes 0 1 0 1 0 1 0 1"), "{out}");
    assert!(out.contains("set bind node 1 0\n"), "{out}");
    assert!(out.contains("get task policy 0 mode 2 mask 2"), "{out}");
    assert!(out.contains("bound nodes 1 1 1 1 1 1 1 1"), "{out}");
    assert!(out.contains("get mems allowed 0 mask 3"), "{out}");
    assert!(out.contains("mbind bind node 1 over bound 0\n"), "{out}");
    // The host's check: every block's node agrees with the SRAT, the
    // 8 frames of the mbind(MPOL_BIND) VMA lie on node 1.
    let verify = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["view"] == "verify")
        .flat_map(|j| j["data"]["checks"].as_array().cloned().unwrap_or_default())
        .find(|c| c["check"] == "numa")
        .unwrap_or_else(|| panic!("no numa check result:\n{out}"));
    assert_eq!(verify["status"], "ok", "{verify}");
    assert!(verify["detail"].as_str().unwrap_or("").contains("8 frames in 1 MPOL_BIND VMAs"), "{verify}");
    // numa_maps as Linux's.
    assert!(out.contains("200000000 interleave:0-1 anon=8 dirty=8 N0=4 N1=4 kernelpagesize_kB=4"), "{out}");
    assert!(out.contains("210000000 bind:1 anon=8 dirty=8 N1=8 kernelpagesize_kB=4"), "{out}");
    // The host walks the same frames: round-robin, then all on node 1.
    let frames = walked_frames(&r.stdout);
    assert_eq!(frames.len(), 16, "{out}");
    for (va, pa) in frames {
        let page = (va >> 12) & 7;
        let want = if va < 0x2_1000_0000 { page % 2 } else { 1 };
        assert_eq!(node_of(pa), want, "va {va:#x} pa {pa:#x}\n{out}");
    }
}

/// mbind(MPOL_MF_MOVE): 16 pages placed on node 0 (bound there), filled
/// with a pattern, then bound to node 1 with MPOL_MF_MOVE: they migrate,
/// numa_maps shows them on N1, the data is intact, and the host checks at
/// a checkpoint. Pages a forked child maps too do not move without
/// MPOL_MF_MOVE_ALL, so MPOL_MF_STRICT gives EIO, as Linux.
const MOVE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MPOL_BIND 2
#define MPOL_F_NODE 1
#define MPOL_F_ADDR 2
#define MPOL_MF_STRICT 1
#define MPOL_MF_MOVE 2
#define MV ((char *)0x230000000UL)
#define SH ((char *)0x240000000UL)
#define HP ((char *)0x280000000UL)
#define N 16

static long e(long r) { return r < 0 ? -errno : r; }
static long mbind_(void *a, unsigned long len, long mode, unsigned long *mask, unsigned long maxnode, unsigned flags) {
    return e(syscall(SYS_mbind, a, len, mode, mask, maxnode, flags));
}
static char *map(char *at) {
    return mmap(at, N * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}
static void nodes(const char *what, char *p) {
    printf("%s", what);
    for (int i = 0; i < N; i++) {
        int node = -1;
        syscall(SYS_get_mempolicy, &node, 0, 0, p + i * 4096, MPOL_F_NODE | MPOL_F_ADDR);
        printf(" %d", node);
    }
    printf("\n");
}
static int node_of(char *p) {
    int node = -1;
    syscall(SYS_get_mempolicy, &node, 0, 0, p, MPOL_F_NODE | MPOL_F_ADDR);
    return node;
}
static long huge_kb(void) {
    char buf[4096];
    int fd = open("/proc/meminfo", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "AnonHugePages:");
    return p ? strtol(p + 14, 0, 10) : -1;
}
static void cat(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY), n;
    while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
    close(fd);
}

int main(void) {
    unsigned long m0 = 1, m1 = 2;
    setvbuf(stdout, 0, _IONBF, 0);
    char *mv = map(MV);
    printf("bind node 0 %ld\n", mbind_(MV, N * 4096, MPOL_BIND, &m0, 3, 0));
    for (int i = 0; i < N * 4096; i++) mv[i] = (char)(i * 7 + i / 4096);
    nodes("before", mv);
    printf("move to node 1 %ld\n", mbind_(MV, N * 4096, MPOL_BIND, &m1, 3, MPOL_MF_MOVE | MPOL_MF_STRICT));
    nodes("after", mv);
    int bad = 0;
    for (int i = 0; i < N * 4096; i++) bad += mv[i] != (char)(i * 7 + i / 4096);
    printf("bad bytes %d\n", bad);
    cat("/proc/self/numa_maps");
    syscall(503, "numa-moved", 10);

    /* Shared with a child: not moved, STRICT says EIO. */
    char *sh = map(SH);
    mbind_(SH, N * 4096, MPOL_BIND, &m0, 3, 0);
    memset(sh, 5, N * 4096);
    int pfd[2];
    pipe(pfd);
    pid_t c = fork();
    if (c == 0) {
        char x;
        read(pfd[0], &x, 1);
        _exit(sh[0]);
    }
    printf("move shared %ld\n", mbind_(SH, N * 4096, MPOL_BIND, &m1, 3, MPOL_MF_MOVE | MPOL_MF_STRICT));
    nodes("shared", sh);
    write(pfd[1], "x", 1);
    int st = 0;
    waitpid(c, &st, 0);
    printf("child saw %d\n", WEXITSTATUS(st));

    /* A transparent huge page bound to node 0, then moved: split, its
       512 pages on node 1, the data intact. */
    char *hp = mmap(HP, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    madvise(hp, 2 << 20, MADV_HUGEPAGE);
    mbind_(HP, 2 << 20, MPOL_BIND, &m0, 3, 0);
    for (int i = 0; i < (2 << 20); i += 512) hp[i] = (char)(i / 512 + 3);
    printf("thp before: nodes %d %d, AnonHugePages %ld kB\n", node_of(hp), node_of(hp + (2 << 20) - 4096), huge_kb());
    printf("move thp %ld\n", mbind_(HP, 2 << 20, MPOL_BIND, &m1, 3, MPOL_MF_MOVE | MPOL_MF_STRICT));
    int hbad = 0;
    for (int i = 0; i < (2 << 20); i += 512) hbad += hp[i] != (char)(i / 512 + 3);
    printf("thp after: nodes %d %d, AnonHugePages %ld kB, bad %d\n", node_of(hp), node_of(hp + (2 << 20) - 4096), huge_kb(), hbad);
    return 0;
}
"#;

#[test]
fn mbind_move_migrates_pages_to_the_new_node() {
    let dir = Scratch::new("numa-move");
    let prog = compile("musl-gcc", MOVE, &dir.0, "move", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let r = boot(&[
        "--mem",
        "256M",
        "--cpus",
        "2",
        "--numa",
        "2",
        "--initrd",
        root.to_str().unwrap(),
        "--inspect-at",
        "numa-moved",
        "--verify",
        "numa",
        "--json",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    assert!(out.contains("bind node 0 0\n"), "{out}");
    assert!(out.contains("before 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"), "{out}");
    assert!(out.contains("move to node 1 0\n"), "{out}");
    assert!(out.contains("after 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"), "{out}");
    assert!(out.contains("bad bytes 0\n"), "{out}");
    assert!(out.contains("230000000 bind:1 anon=16 dirty=16 N1=16 kernelpagesize_kB=4"), "{out}");
    // The host at the checkpoint after the move: frames agree with the
    // SRAT and the bound VMA's 16 frames lie on node 1.
    let verify = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|j| j["view"] == "verify")
        .flat_map(|j| j["data"]["checks"].as_array().cloned().unwrap_or_default())
        .find(|c| c["check"] == "numa")
        .unwrap_or_else(|| panic!("no numa check result:\n{out}"));
    assert_eq!(verify["status"], "ok", "{verify}");
    assert!(verify["detail"].as_str().unwrap_or("").contains("16 frames in 1 MPOL_BIND VMAs"), "{verify}");
    // Shared pages stay put and STRICT reports it; the child's copy is
    // intact.
    assert!(out.contains("move shared -5\n"), "{out}");
    assert!(out.contains("shared 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"), "{out}");
    assert!(out.contains("child saw 5\n"), "{out}");
    // A THP moves split (Linux moves it whole when it can).
    assert!(out.contains("thp before: nodes 0 0, AnonHugePages 2048 kB\n"), "{out}");
    assert!(out.contains("move thp 0\n"), "{out}");
    assert!(out.contains("thp after: nodes 1 1, AnonHugePages 0 kB, bad 0\n"), "{out}");
}

/// A child prefers, then binds to, a 4 MiB node 1 and touches 1600 pages
/// (6.25 MiB): preferred falls back to node 0 (numa_miss on node 0,
/// numa_foreign on node 1), bind never leaves node 1 and ends in the OOM
/// killer, constrained to the policy (`CONSTRAINT_MEMORY_POLICY`): a
/// bigger process bound to node 0 is not a candidate and lives on.
const FULL: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MPOL_PREFERRED 1
#define MPOL_BIND 2
#define PAGES 1600
#define HOG 1300

static unsigned long vmstat(const char *name) {
    char buf[8192];
    int fd = open("/proc/vmstat", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    size_t l = strlen(name);
    for (char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : 0)
        if (!strncmp(p, name, l) && p[l] == ' ') return strtoul(p + l + 1, 0, 10);
    return ~0UL;
}
static void cat(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY), n;
    while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
    close(fd);
}
static int touch(long mode) {
    unsigned long m1 = 2;
    char *p = mmap(0, PAGES * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (syscall(SYS_mbind, p, PAGES * 4096L, mode, &m1, 3, 0)) return 1;
    for (int i = 0; i < PAGES; i++) p[i * 4096L] = 1;
    int n0 = 0, n1 = 0, node;
    for (int i = 0; i < PAGES; i++) {
        syscall(SYS_get_mempolicy, &node, 0, 0, p + i * 4096L, 3);
        if (node) n1++; else n0++;
    }
    printf("mode %ld: %d pages on node 0, %d on node 1\n", mode, n0, n1);
    return 0;
}
/* Bound to node 0 with more pages than the bind child can get on node 1:
   the global OOM killer would pick it. */
static void hog(int ready, int go) {
    unsigned long m0 = 1;
    if (syscall(SYS_set_mempolicy, MPOL_BIND, &m0, 3)) _exit(1);
    char *p = mmap(0, HOG * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < HOG; i++) p[i * 4096L] = 1;
    char x = 'r';
    write(ready, &x, 1);
    read(go, &x, 1);
    _exit(7);
}
int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    unsigned long miss = vmstat("numa_miss"), foreign = vmstat("numa_foreign");
    pid_t c = fork();
    if (c == 0) _exit(touch(MPOL_PREFERRED));
    int st;
    waitpid(c, &st, 0);
    printf("preferred child: exit %d, numa_miss grew %d numa_foreign grew %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           vmstat("numa_miss") > miss, vmstat("numa_foreign") > foreign);
    int ready[2], go[2];
    pipe(ready);
    pipe(go);
    pid_t h = fork();
    if (h == 0) hog(ready[1], go[0]);
    char x;
    read(ready[0], &x, 1);
    printf("hog pid %d\n", h);
    c = fork();
    if (c == 0) _exit(touch(MPOL_BIND));
    printf("bind pid %d\n", c);
    waitpid(c, &st, 0);
    printf("bind child: %s %d\n", WIFSIGNALED(st) ? "killed by signal" : "exited", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    write(go[1], &x, 1);
    waitpid(h, &st, 0);
    printf("hog: %s %d\n", WIFSIGNALED(st) ? "killed by signal" : "exited", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    cat("/proc/numastat");
    return 0;
}
"#;

#[test]
fn preferred_falls_back_and_bind_ooms_when_the_node_is_full() {
    let dir = Scratch::new("numa-full");
    let prog = compile("musl-gcc", FULL, &dir.0, "full", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let r = boot(&["--mem", "128M", "--cpus", "1", "--numa", "0=124M,1=4M", "--initrd", root.to_str().unwrap()]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    let line = out.lines().find(|l| l.starts_with("mode 1: ")).unwrap_or_else(|| panic!("{out}"));
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.trim_end_matches([',', ':']).parse().ok()).collect();
    // "mode 1: A pages on node 0, B on node 1": node 1 filled first (all
    // but its reserve), the rest on node 0.
    assert_eq!(nums.len(), 5, "{line}");
    let (n0, n1) = (nums[1], nums[3]);
    assert_eq!(n0 + n1, 1600, "{line}");
    assert!(n1 > 900 && n0 > 0, "{line}");
    assert!(out.contains("preferred child: exit 0, numa_miss grew 1 numa_foreign grew 1"), "{out}");
    // Bind: node 1 only, so the fault path runs out and the OOM killer
    // takes the child, constrained to the policy's node: the hog bound
    // to node 0 (more pages) is neither listed nor killed.
    let pid = |what: &str| -> u64 {
        let l = out.lines().find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what}: {out}"));
        l[what.len()..].trim().parse().unwrap_or_else(|_| panic!("{l}"))
    };
    let (hog, bind) = (pid("hog pid "), pid("bind pid "));
    assert!(
        out.contains(&format!(
            "oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,mems_allowed=0-1,global_oom,task_memcg=/,task=init,pid={bind},uid=0"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("Out of memory: Killed process {bind} (init)")), "{out}");
    assert!(!out.contains("CONSTRAINT_NONE"), "{out}");
    let table: Vec<&str> =
        out.lines().skip_while(|l| !l.starts_with("Tasks state")).take_while(|l| !l.starts_with("oom-kill:")).collect();
    assert!(table.iter().any(|l| l.starts_with(&format!("[{bind}] "))), "{out}");
    assert!(
        !table.iter().any(|l| l.starts_with(&format!("[{hog}] "))),
        "the hog bound to node 0 is a candidate: {out}"
    );
    assert!(out.contains("bind child: killed by signal 9"), "{out}");
    assert!(!out.contains("mode 2: "), "bind completed, so it left node 1: {out}");
    assert!(out.contains("hog: exited 7"), "{out}");
}

/// Allocations on a task's behalf follow its policy (Linux's
/// `alloc_pages` with the task's policy): a 16-page tmpfs file written
/// under the default policy lands on the local node 0, one written after
/// `set_mempolicy(MPOL_BIND, node 1)` on node 1 (numa_maps of a mapping
/// of each), and so do the page tables of a new mapping far from the
/// others; the host's physmap at a checkpoint counts node 1's page-cache
/// and page-table frames. Under a task interleave policy the file's pages
/// alternate between the nodes (the task's cursor, Linux's `il_prev`).
const CACHE: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_BIND 2
#define MPOL_INTERLEAVE 3
#define N 16

static void file(const char *path) {
    static char page[4096];
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    for (int i = 0; i < N; i++) {
        memset(page, 'a' + i, sizeof page);
        write(fd, page, sizeof page);
    }
    close(fd);
}
static void show(const char *path, char *at) {
    int fd = open(path, O_RDONLY);
    volatile char *p = mmap(at, N * 4096, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
    close(fd);
    int sum = 0;
    for (int i = 0; i < N; i++) sum += p[i * 4096];
    char buf[8192], want[64];
    snprintf(want, sizeof want, "file=%s", path);
    fd = open("/proc/self/numa_maps", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(0, "\n"))
        if (strstr(l, want)) printf("%s sum %d: %s\n", path, sum, l);
}
int main(void) {
    unsigned long m1 = 2;
    setvbuf(stdout, 0, _IONBF, 0);
    file("/tmp/local");
    show("/tmp/local", (char *)0x300000000UL);
    printf("bind node 1 %ld\n", syscall(SYS_set_mempolicy, MPOL_BIND, &m1, 3));
    file("/tmp/bound");
    show("/tmp/bound", (char *)0x7000000000UL);
    syscall(503, "numa-cache", 10);
    /* Task interleave: the task's cursor takes the nodes in turn. */
    unsigned long m01 = 3;
    printf("interleave %ld\n", syscall(SYS_set_mempolicy, MPOL_INTERLEAVE, &m01, 3));
    file("/tmp/il");
    show("/tmp/il", (char *)0x310000000UL);
    return 0;
}
"#;

#[test]
fn page_cache_and_page_tables_follow_the_task_policy() {
    let dir = Scratch::new("numa-cache");
    let prog = compile("musl-gcc", CACHE, &dir.0, "cache", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let view = format!("physmap:{}", dir.0.display());
    let r = boot(&[
        "--mem",
        "256M",
        "--cpus",
        "1",
        "--numa",
        "2",
        "--initrd",
        root.to_str().unwrap(),
        "--inspect-at",
        "numa-cache",
        "--inspect",
        &view,
        "--json",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    let sum: u32 = (0..16).map(|i| b'a' as u32 + i).sum();
    // The sums prove the pages hold the data written.
    assert!(
        out.contains(&format!(
            "/tmp/local sum {sum}: 300000000 default file=/tmp/local mapped=16 N0=16 kernelpagesize_kB=4"
        )),
        "{out}"
    );
    assert!(out.contains("bind node 1 0\n"), "{out}");
    assert!(
        out.contains(&format!(
            "/tmp/bound sum {sum}: 7000000000 bind:1 file=/tmp/bound mapped=16 N1=16 kernelpagesize_kB=4"
        )),
        "{out}"
    );
    assert!(out.contains("interleave 0\n"), "{out}");
    assert!(
        out.contains(&format!(
            "/tmp/il sum {sum}: 310000000 interleave:0-1 file=/tmp/il mapped=16 N0=8 N1=8 kernelpagesize_kB=4"
        )),
        "{out}"
    );
    let v: Vec<Value> = r.stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let pm = &v.iter().find(|v| v["view"] == "physmap").unwrap_or_else(|| panic!("{out}"))["data"];
    let nodes = pm["nodes"].as_array().unwrap_or_else(|| panic!("no node counts: {pm}"));
    let frames = |node: usize, class: &str| nodes[node]["frames"][class].as_u64().unwrap_or(0);
    // The bound file's 16 pages; the page tables of the mapping at
    // 0x7000000000 (a PUD table's range of its own: PMD and PTE tables).
    assert!(frames(1, "page-cache") >= 16, "{pm}");
    assert!(frames(1, "page-table") >= 2, "{pm}");
}

/// migrate_pages(2): Linux's errno for bad input; the caller's own pages
/// (16 patterned pages and a transparent huge page, split to move) go
/// from node 0 to node 1 with the data intact (the binary's page-cache
/// pages stay, and are the count of pages not moved); a child's pages go back to
/// node 0 by pid, and as the caller is root (MPOL_MF_MOVE_ALL) the pages
/// it still shares with its parent move too: the parent sees its own
/// mapping on node 0 afterwards.
const MIGRATE: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MPOL_F_NODE 1
#define MPOL_F_ADDR 2
#define MV ((char *)0x250000000UL)
#define HP ((char *)0x260000000UL)
#define N 16
#define HUGE (2UL << 20)

static long e(long r) { return r < 0 ? -errno : r; }
static long migrate(long pid, unsigned long maxnode, unsigned long *from, unsigned long *to) {
    return e(syscall(SYS_migrate_pages, pid, maxnode, from, to));
}
static int node(char *p) {
    int n = -1;
    syscall(SYS_get_mempolicy, &n, 0, 0, p, MPOL_F_NODE | MPOL_F_ADDR);
    return n;
}
static void nodes(const char *what, char *p) {
    printf("%s", what);
    for (int i = 0; i < N; i++) printf(" %d", node(p + i * 4096));
    printf("\n");
}
static int bad(char *p, unsigned long len, int salt) {
    int b = 0;
    for (unsigned long i = 0; i < len; i += 64) b += p[i] != (char)(i / 64 * 7 + salt);
    return b;
}
static void fill(char *p, unsigned long len, int salt) {
    for (unsigned long i = 0; i < len; i += 64) p[i] = (char)(i / 64 * 7 + salt);
}
static long huge_kb(void) {
    char buf[4096];
    int fd = open("/proc/meminfo", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    char *p = strstr(buf, "AnonHugePages:");
    return p ? atol(p + 14) : -1;
}
static void maps(void) {
    char buf[8192];
    int fd = open("/proc/self/numa_maps", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(0, "\n"))
        if (!strncmp(l, "250000000", 9) || !strncmp(l, "260000000", 9)) printf("%s\n", l);
}

/* Page-cache pages mapped on node 0 (file VMAs' N0= less their anon=):
   the migrator moves anonymous pages only, these stay and count. */
static int file_pages_n0(void) {
    char buf[8192];
    int fd = open("/proc/self/numa_maps", O_RDONLY);
    int n = read(fd, buf, sizeof buf - 1), sum = 0;
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(0, "\n")) {
        if (!strstr(l, " file=")) continue;
        char *a = strstr(l, " anon="), *n0 = strstr(l, " N0=");
        if (n0) sum += atoi(n0 + 4) - (a ? atoi(a + 6) : 0);
    }
    return sum;
}

int main(void) {
    unsigned long m0 = 1, m1 = 2, m2 = 4, empty = 0, big[2] = {1, 1};
    setvbuf(stdout, 0, _IONBF, 0);
    printf("no such pid %ld\n", migrate(99999, 3, &m0, &m1));
    printf("empty new %ld\n", migrate(0, 3, &m0, &empty));
    printf("absent new node %ld\n", migrate(0, 4, &m0, &m2));
    printf("bad new pointer %ld\n", migrate(0, 3, &m0, (unsigned long *)8));
    printf("bit beyond the ABI mask %ld\n", migrate(0, 129, big, &m1));
    printf("same nodes %ld\n", migrate(0, 3, &m0, &m0));

    char *mv = mmap(MV, N * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    fill(mv, N * 4096, 1);
    char *hp = mmap(HP, HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    madvise(hp, HUGE, MADV_HUGEPAGE);
    fill(hp, HUGE, 3);
    nodes("before", mv);
    printf("huge page before %d %d, AnonHugePages %ld kB\n", node(hp), node(hp + HUGE - 4096), huge_kb());
    maps();
    int files = file_pages_n0();
    long left = migrate(0, 3, &m0, &m1);
    printf("self to node 1: %ld not moved, %d page-cache pages\n", left, files);
    nodes("after", mv);
    printf("huge page after %d %d, AnonHugePages %ld kB\n", node(hp), node(hp + HUGE - 4096), huge_kb());
    printf("bad bytes %d %d\n", bad(mv, N * 4096, 1), bad(hp, HUGE, 3));
    maps();
    syscall(503, "numa-migrated", 13);
    munmap(hp, HUGE);

    int go[2], done[2];
    pipe(go);
    pipe(done);
    pid_t c = fork();
    if (c == 0) {
        char x;
        read(go[0], &x, 1);
        int ok = 1;
        for (int i = 0; i < N; i++) ok &= node(mv + i * 4096) == 0;
        ok &= bad(mv, N * 4096, 1) == 0;
        _exit(ok ? 0 : 1);
    }
    printf("child to node 0 %ld\n", migrate(c, 3, &m1, &m0));
    nodes("parent's shared pages", mv);
    write(go[1], "x", 1);
    int st = 0;
    waitpid(c, &st, 0);
    printf("child saw its pages on node 0: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "no");
    printf("parent bad bytes %d\n", bad(mv, N * 4096, 1));
    return 0;
}
"#;

#[test]
fn migrate_pages_moves_a_process_between_nodes() {
    let dir = Scratch::new("numa-migrate");
    for (cc, name) in [("gcc", "migrate-glibc"), ("musl-gcc", "migrate-musl")] {
        let prog = compile(cc, MIGRATE, &dir.0, name, &["-static"]);
        let root = initrd_with_init(&dir.0.join(name).with_extension("d"), &prog);
        let mut views = Vec::new();
        for i in 0..16u64 {
            views.push(format!("walk:{:#x}", 0x2_5000_0000 + i * 4096));
        }
        let views = views.join(",");
        let r = boot(&[
            "--mem",
            "256M",
            "--cpus",
            "1",
            "--numa",
            "2",
            "--initrd",
            root.to_str().unwrap(),
            "--inspect-at",
            "numa-migrated",
            "--inspect",
            &views,
            "--verify",
            "numa",
            "--json",
        ]);
        let out = r.all();
        assert_eq!(r.status, 0, "{cc}: {out}");
        for (what, want) in [
            ("no such pid", "-3"),
            ("empty new", "-22"),
            ("absent new node", "-22"),
            ("bad new pointer", "-14"),
            ("bit beyond the ABI mask", "-22"),
            ("same nodes", "0"),
            ("child to node 0", "0"),
        ] {
            assert!(out.contains(&format!("{what} {want}\n")), "{cc}: {what}: want {want}\n{out}");
        }
        assert!(out.contains("before 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"), "{cc}: {out}");
        assert!(out.contains("huge page before 0 0, AnonHugePages 2048 kB\n"), "{cc}: {out}");
        assert!(out.contains("250000000 default anon=16 dirty=16 N0=16 kernelpagesize_kB=4"), "{cc}: {out}");
        assert!(out.contains("260000000 default anon=512 dirty=512 N0=512 kernelpagesize_kB=4"), "{cc}: {out}");
        // Every anonymous page moved; the binary's page-cache pages did
        // not (the migrator moves anon pages only) and are the count.
        let line = out.lines().find(|l| l.starts_with("self to node 1: ")).unwrap_or_else(|| panic!("{cc}: {out}"));
        let n: Vec<i64> = line.split_whitespace().filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
        assert_eq!(n.len(), 2, "{line}");
        assert_eq!(n[0], n[1], "{cc}: {line}");
        assert!(out.contains("after 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n"), "{cc}: {out}");
        // Split to move (Linux moves it whole when it can).
        assert!(out.contains("huge page after 1 1, AnonHugePages 0 kB\n"), "{cc}: {out}");
        assert!(out.contains("bad bytes 0 0\n"), "{cc}: {out}");
        assert!(out.contains("250000000 default anon=16 dirty=16 N1=16 kernelpagesize_kB=4"), "{cc}: {out}");
        assert!(out.contains("260000000 default anon=512 dirty=512 N1=512 kernelpagesize_kB=4"), "{cc}: {out}");
        assert!(out.contains("parent's shared pages 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"), "{cc}: {out}");
        assert!(out.contains("child saw its pages on node 0: yes\n"), "{cc}: {out}");
        assert!(out.contains("parent bad bytes 0\n"), "{cc}: {out}");
        // The host at the checkpoint after the move: the 16 frames in
        // node 1's SRAT range, every block's node agreeing with the SRAT.
        let frames = walked_frames(&r.stdout);
        assert_eq!(frames.len(), 16, "{cc}: {out}");
        for (va, pa) in frames {
            assert_eq!(node_of(pa), 1, "{cc}: va {va:#x} pa {pa:#x}\n{out}");
        }
        let verify = r
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|j| j["view"] == "verify")
            .flat_map(|j| j["data"]["checks"].as_array().cloned().unwrap_or_default())
            .find(|c| c["check"] == "numa")
            .unwrap_or_else(|| panic!("{cc}: no numa check result:\n{out}"));
        assert_eq!(verify["status"], "ok", "{cc}: {verify}");
    }
}

/// Compaction per node: a process bound to node 1 (12 MiB) touches two
/// mappings in turn until node 1 has no free 2 MiB block, unmaps one, and
/// an order-9 allocation on node 1 only fails; then node 1 is compacted
/// (by its kcompactd, woken by that failure; or through
/// /proc/sys/vm/compact_memory with `-DSYSCTL`) and the order-9
/// allocation on node 1 succeeds, the data intact. /proc/pagetypeinfo
/// names node 1's zone as Linux's ("Node    1, zone    DMA32").
const COMPACT: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_BIND 2
#define SYS_COMPACT 520
#define MAX 1600

static long compact(long op, long arg) {
    long r = syscall(SYS_COMPACT, op, arg);
    return r < 0 ? -errno : r;
}
static void cat(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY), n;
    while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
    close(fd);
}

int main(void) {
    unsigned long m1 = 2;
    setvbuf(stdout, 0, _IONBF, 0);
    printf("bad node %ld\n", compact(8, 7));
    printf("bind node 1 %ld\n", syscall(SYS_set_mempolicy, MPOL_BIND, &m1, 3));
    long free9 = compact(8, 1);
    printf("order-9 blocks free on node 1 at start: %s\n", free9 > 0 ? "some" : "none");
    char *a = mmap(0, MAX * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *b = mmap(0, MAX * 4096L, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int n = 0;
    while (n < MAX && compact(8, 1) > 0)
        for (int k = 0; k < 8 && n < MAX; k++, n++) {
            a[n * 4096L] = (char)(n * 3 + 1);
            b[n * 4096L] = 1;
        }
    munmap(b, MAX * 4096L);
    printf("touched %d pairs; order-9 blocks free on node 1: %ld\n", n, compact(8, 1));
    syscall(503, "numa-fragmented", 15);
#ifdef SYSCTL
    int fd = open("/proc/sys/vm/compact_memory", O_WRONLY);
    printf("compact_memory write %ld\n", (long)write(fd, "1\n", 2));
    close(fd);
    printf("after compact_memory: order-9 blocks free on node 1: %s\n", compact(8, 1) > 0 ? "some" : "none");
#else
    printf("order-9 on node 1 before: %ld\n", compact(7, 1));
    int y = 0;
    while (compact(8, 1) == 0 && y < 50) {
        sched_yield();
        y++;
    }
    printf("after kcompactd: order-9 blocks free on node 1: %s\n", compact(8, 1) > 0 ? "some" : "none");
#endif
    printf("order-9 on node 1 after: %ld\n", compact(7, 1));
    int bad = 0;
    for (int i = 0; i < n; i++) bad += a[i * 4096L] != (char)(i * 3 + 1);
    printf("bad pages %d\n", bad);
    cat("/proc/pagetypeinfo");
    cat("/proc/vmstat");
    return 0;
}
"#;

#[test]
fn compaction_and_kcompactd_work_per_node() {
    let dir = Scratch::new("numa-compact");
    for (flags, how) in [(&["-static"][..], "kcompactd"), (&["-static", "-DSYSCTL"][..], "compact_memory")] {
        let prog = compile("musl-gcc", COMPACT, &dir.0, &format!("compact-{how}"), flags);
        let root = initrd_with_init(&dir.0.join(how), &prog);
        // kcompactd runs when asked for (the `kcompactd` switch). The
        // host reads the free lists at the checkpoint after the
        // fragmentation, per node.
        let r = boot(&[
            "--mem",
            "64M",
            "--cpus",
            "1",
            "--numa",
            "0=52M,1=12M",
            "--cmdline",
            "kcompactd",
            "--initrd",
            root.to_str().unwrap(),
            "--inspect-at",
            "numa-fragmented",
            "--inspect",
            "buddyinfo,pagetypeinfo",
        ]);
        let out = r.all();
        assert_eq!(r.status, 0, "{how}: {out}");
        assert!(out.contains("bad node -22\n"), "{how}: {out}");
        assert!(out.contains("bind node 1 0\n"), "{how}: {out}");
        assert!(out.contains("order-9 blocks free on node 1 at start: some\n"), "{how}: {out}");
        // Fragmented: node 1 has no free 2 MiB block (node 0 has plenty).
        let line = out.lines().find(|l| l.starts_with("touched ")).unwrap_or_else(|| panic!("{how}: {out}"));
        assert!(line.ends_with("order-9 blocks free on node 1: 0"), "{how}: {line}");
        let pairs: u64 = line["touched ".len()..].split(' ').next().unwrap().parse().unwrap();
        assert!(pairs > 500, "{how}: {line}");
        if how == "kcompactd" {
            assert!(out.contains("order-9 on node 1 before: 0\n"), "{how}: {out}");
        } else {
            assert!(out.contains("compact_memory write 2\n"), "{how}: {out}");
        }
        assert!(out.contains(&format!("after {how}: order-9 blocks free on node 1: some\n")), "{how}: {out}");
        assert!(out.contains("order-9 on node 1 after: 1\n"), "{how}: {out}");
        assert!(out.contains("bad pages 0\n"), "{how}: {out}");
        let vm = |name: &str| -> u64 {
            let l =
                out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}: {out}"));
            l[name.len() + 1..].trim().parse().unwrap()
        };
        assert!(vm("compact_migrate_scanned") > 0, "{how}: {out}");
        if how == "kcompactd" {
            assert!(vm("compact_daemon_wake") > 0, "{how}: {out}");
        }
        assert!(out.contains("Node    1, zone    DMA32, type      Movable"), "{how}: {out}");
        assert!(out.contains("\nNode 1, zone    DMA32 "), "{how}: {out}");
        // The host's views name node 1's zone too, and see it as the guest
        // did: no free block of order 9 or 10 there, some on node 0.
        let host = |node: u8| -> Vec<u64> {
            let l = out
                .lines()
                .find(|l| l.starts_with(&format!("Node {node}, zone    DMA32 ")) && l.split_whitespace().count() == 15)
                .unwrap_or_else(|| panic!("{how}: no host buddyinfo line for node {node}: {out}"));
            l.split_whitespace().skip(4).map(|n| n.parse().unwrap()).collect()
        };
        assert_eq!(&host(1)[9..], &[0, 0], "{how}: {out}");
        assert!(host(0)[9..].iter().sum::<u64>() > 0, "{how}: {out}");
        assert!(out.contains("Node    1, zone    DMA32, type    Unmovable"), "{how}: {out}");
    }
}

/// Per-node LRU lists and kswapd: a process binds a mapping to a 4 MiB
/// node 1 and touches 1200 pages of it (more than the node holds) while
/// 256 pages of its own on node 0 stay mapped; with swap, node 1's
/// reclaim (its kswapd, its direct reclaim) swaps the bound pages out and
/// back, and node 0 is neither scanned nor loses a page.
const NODE_RECLAIM: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MPOL_BIND 2
#define LOCAL 256
#define BOUND 1200

/* "Node N" per-node stat `name` from /proc/zoneinfo. */
static long node_stat(int node, const char *name) {
    static char buf[65536];
    int fd = open("/proc/zoneinfo", O_RDONLY), n, len = 0;
    while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += n;
    close(fd);
    buf[len] = 0;
    char head[32];
    snprintf(head, sizeof head, "Node %d,", node);
    char *at = strstr(buf, head);
    if (!at) return -1;
    at = strstr(at, "per-node stats");
    if (!at) return -1;
    char *end = strstr(at, "pages free");
    size_t l = strlen(name);
    for (char *p = at; p && p < end; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : 0) {
        while (*p == ' ') p++;
        if (!strncmp(p, name, l) && p[l] == ' ') return strtol(p + l, 0, 10);
    }
    return -1;
}
static void report(const char *when) {
    for (int node = 0; node < 2; node++)
        printf("%s node %d: anon %ld pgscan_kswapd %ld pgscan_direct %ld pgsteal_kswapd %ld pgsteal_direct %ld\n", when,
               node, node_stat(node, "nr_inactive_anon") + node_stat(node, "nr_active_anon"),
               node_stat(node, "pgscan_kswapd"), node_stat(node, "pgscan_direct"), node_stat(node, "pgsteal_kswapd"),
               node_stat(node, "pgsteal_direct"));
}
static void cat(const char *path) {
    char buf[4096];
    int fd = open(path, O_RDONLY), n;
    while ((n = read(fd, buf, sizeof buf)) > 0) write(1, buf, n);
    close(fd);
}

/* /proc/vmstat's reclaim lines ("vmstat NAME N"). */
static void grep_vmstat(void) {
    static char buf[16384];
    int fd = open("/proc/vmstat", O_RDONLY), n, len = 0;
    while ((n = read(fd, buf + len, sizeof buf - 1 - len)) > 0) len += n;
    close(fd);
    buf[len] = 0;
    for (char *p = buf; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : 0)
        if (!strncmp(p, "pgscan", 6) || !strncmp(p, "pgsteal", 7) || !strncmp(p, "kswapd", 6) ||
            !strncmp(p, "pageoutrun", 10) || !strncmp(p, "allocstall", 10)) {
            char *e = strchr(p, '\n');
            printf("vmstat %.*s\n", e ? (int)(e - p) : (int)strlen(p), p);
        }
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    char *local = mmap((void *)0x240000000UL, LOCAL * 4096L, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    for (int i = 0; i < LOCAL; i++) local[i * 4096L] = (char)(i | 1);
    report("before");
    unsigned long m1 = 2;
    char *b = mmap((void *)0x250000000UL, BOUND * 4096L, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("mbind %ld\n", syscall(SYS_mbind, b, BOUND * 4096L, MPOL_BIND, &m1, 3, 0));
    /* A yield after each page: kswapd runs when a CPU schedules (the
       guest does not preempt a faulting loop), as swaptest's `yield`
       lets it; the node's watermarks are a few pages apart, so a later
       kswapd would find direct reclaim done already. */
    for (int i = 0; i < BOUND; i++) {
        b[i * 4096L] = (char)(i * 7 + 1);
        sched_yield();
    }
    int bad = 0;
    for (int i = 0; i < BOUND; i++) bad += b[i * 4096L] != (char)(i * 7 + 1);
    for (int i = 0; i < LOCAL; i++) bad += local[i * 4096L] != (char)(i | 1);
    printf("bad %d\n", bad);
    report("after");
    cat("/proc/self/numa_maps");
    grep_vmstat();
    syscall(503, "node-reclaim", 12);
    return 0;
}
"#;

#[test]
fn a_full_node_reclaims_its_own_lru_and_leaves_the_other_node_alone() {
    let dir = Scratch::new("numa-node-reclaim");
    let prog = compile("musl-gcc", NODE_RECLAIM, &dir.0, "nodereclaim", &["-static"]);
    let root = initrd_with_init(&dir.0, &prog);
    let swap = TempFile::absent("numa-node-reclaim-swap");
    let swap_arg = format!("{},size=16M", swap.path());
    let r = boot(&[
        "--mem",
        "128M",
        // Two CPUs, both on node 0 (the process's own pages are local
        // there): kswapd runs on the one the process leaves idle.
        "--cpus",
        "2",
        "--numa",
        "0=124M,1=4M,cpus=0-1:",
        "--swap",
        &swap_arg,
        "--initrd",
        root.to_str().unwrap(),
        "--inspect-at",
        "node-reclaim",
        "--verify",
        "lru",
    ]);
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    assert!(out.contains("mbind 0\n"), "{out}");
    assert!(out.contains("bad 0\n"), "every page read back intact:\n{out}");
    let stat = |when: &str, node: u32, key: &str| -> i64 {
        let l = out
            .lines()
            .find(|l| l.starts_with(&format!("{when} node {node}:")))
            .unwrap_or_else(|| panic!("no {when} node {node} line:\n{out}"));
        let at = l.find(&format!(" {key} ")).unwrap_or_else(|| panic!("{key} missing: {l}")) + key.len() + 2;
        l[at..].split(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bad {key}: {l}"))
    };
    // Node 1 was reclaimed by its own kswapd (kswapd1: only it counts
    // node 1's kswapd scans) and stole pages to swap.
    assert!(stat("after", 1, "pgscan_kswapd") > 0, "kswapd1 never scanned node 1:\n{out}");
    let steal1 = stat("after", 1, "pgsteal_kswapd") + stat("after", 1, "pgsteal_direct");
    assert!(steal1 > 0, "node 1 reclaimed nothing:\n{out}");
    // Node 0 had room: nothing scanned there, and its anon pages all
    // stayed resident on it.
    for key in ["pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct"] {
        assert_eq!(stat("after", 0, key), 0, "node 0 {key}:\n{out}");
    }
    assert!(stat("after", 0, "anon") >= 256, "{out}");
    assert!(out.contains("240000000 default anon=256 dirty=256 N0=256"), "node 0's pages stayed resident:\n{out}");
    // The bound mapping is there with its policy (its resident pages:
    // swap readahead places pages by the default policy here).
    assert!(out.contains("250000000 bind:1 anon="), "{out}");
    // The host at the checkpoint: every page on its own node's lists.
    let l = out.lines().find(|l| l.starts_with("verify lru: ")).unwrap_or_else(|| panic!("no verify lru:\n{out}"));
    assert!(l.starts_with("verify lru: ok ("), "{l}\n{out}");
    assert!(l.contains("node 0 ") && l.contains("node 1 "), "{l}");
}

/// A thread keeps writing to 16 pages on one CPU while the main thread
/// moves them between the nodes six times with mbind(MPOL_MF_MOVE) on
/// the other: every increment must survive the moves. A write that lands
/// in the old frame after its copy is lost (Linux unmaps the PTEs to
/// migration entries before the copy; here they are write-protected and
/// flushed first, so the writer faults and writes again into the new
/// frame).
const MOVE_WHILE_WRITING: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGES 16
static volatile int stop, started;
static volatile unsigned long *m;
static volatile unsigned long writes;

static void *writer(void *arg) {
    (void)arg;
    unsigned long n = 0;
    started = 1;
    while (!stop)
        for (int i = 0; i < PAGES; i++) {
            m[i * 512] += 1;
            n++;
        }
    writes = n;
    return 0;
}

/* The nodes of the 16 pages as bits (get_mempolicy MPOL_F_NODE | MPOL_F_ADDR). */
static unsigned nodes(void) {
    unsigned bits = 0;
    for (int i = 0; i < PAGES; i++) {
        int node = -1;
        syscall(SYS_get_mempolicy, &node, 0, 0, (void *)&m[i * 512], 3);
        bits |= (unsigned)node << i;
    }
    return bits;
}

int main(void) {
    m = mmap(0, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < PAGES; i++)
        m[i * 512] = 0;
    pthread_t t;
    pthread_create(&t, 0, writer, 0);
    while (!started)
        ;
    int ok = 0;
    for (int r = 0; r < 6; r++) {
        unsigned long node = (r + 1) & 1, mask = 1UL << node;
        long rc = syscall(SYS_mbind, m, PAGES * 4096, 2 /* MPOL_BIND */, &mask, 64, 2 /* MPOL_MF_MOVE */);
        ok += rc == 0 && nodes() == (node ? 0xffffu : 0);
    }
    stop = 1;
    pthread_join(t, 0);
    syscall(503, "moved", 5); /* a checkpoint: the host replays the TLB record */
    unsigned long sum = 0;
    for (int i = 0; i < PAGES; i++)
        sum += m[i * 512];
    printf("moves %d of 6 with all 16 pages on the new node\n", ok);
    printf("writes %lu, counted %lu, lost %ld\n", writes, sum, (long)(writes - sum));
    return 0;
}
"#;

#[test]
fn migration_loses_no_write_of_a_thread_writing_on_another_cpu() {
    let r = run_c_init(
        "numa-move-writing",
        MOVE_WHILE_WRITING,
        &["--timeout", "300", "--mem", "256M", "--cpus", "2", "--numa", "2", "--verify", "tlb"],
    );
    let out = r.all();
    assert_eq!(r.status, 0, "{out}");
    assert!(out.contains("moves 6 of 6 with all 16 pages on the new node\n"), "{out}");
    let w = out.lines().find(|l| l.starts_with("writes ")).unwrap();
    assert!(w.ends_with(", lost 0"), "writes lost across the migrations: {w}\n{out}");
    let writes: u64 = w.split(' ').nth(1).and_then(|n| n.trim_end_matches(',').parse().ok()).unwrap_or(0);
    assert!(writes > 0, "{w}");
    // The write-protect before each copy and the remap after it were
    // flushed on both CPUs before the old frames were freed.
    let tlb = out.lines().rfind(|l| l.starts_with("verify tlb: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(tlb.starts_with("verify tlb: ok (") && !tlb.starts_with("verify tlb: ok (0 PTE"), "{tlb}\n{out}");
}
