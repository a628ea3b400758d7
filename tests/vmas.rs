//! `--inspect vmas` (issue 19): the VMAs the guest publishes in its
//! descriptor, with Rss and Swap per VMA from the host's walk of the page
//! tables, against what the same process reads from its own
//! /proc/self/smaps just before the checkpoint: the same VMAs (bounds,
//! permissions, names) with the same Rss and Swap, for anonymous memory
//! touched in part, a split by mprotect, the zero page, a shared mapping,
//! a file mapping, the heap and the stack; THP eligibility follows
//! `madvise(MADV_HUGEPAGE)`.

mod common;

use common::{boot, compile, Scratch};
use serde_json::Value;

/// Maps one of each kind of VMA, touches some pages, copies its smaps'
/// VMA lines with their Rss and Swap to stdout, then stops at checkpoint
/// `mark` (system call 503) for the host's view.
const PROG: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
static char text[65536];
static void deep(void) {
    volatile char big[64 * 1024];
    memset((char *)big, 1, sizeof big);
}
int main(void) {
    printf("start\n");
    fflush(stdout);
    memset(text, 0, sizeof text);
    deep();
    char *a = mmap((void *)0x10000000, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    a[0] = 1;
    a[3 * 4096] = 1;
    a[6 * 4096] = 1;
    mprotect(a + 4 * 4096, 2 * 4096, PROT_READ);
    char *z = mmap((void *)0x10100000, 4 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    volatile char sink = z[0] + z[4096];
    char *sh = mmap((void *)0x10200000, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    sh[0] = 1;
    int fd = open("/data.txt", O_RDONLY);
    char *f = mmap((void *)0x10300000, 8192, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    sink += f[0];
    char *h = mmap((void *)0x20000000, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    madvise(h, 4 << 20, MADV_HUGEPAGE);
    char *m = malloc(100);
    m[0] = 1;
    int s = open("/proc/self/smaps", O_RDONLY);
    long n = 0, r;
    while ((r = read(s, text + n, sizeof text - 1 - n)) > 0) n += r;
    text[n] = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
            printf("VMA %s\n", line);
        else if (!strncmp(line, "Rss:", 4) || !strncmp(line, "Swap:", 5))
            printf("VMA %s\n", line);
    }
    fflush(stdout);
    syscall(503, "mark", 4);
    return sink == 99;
}
"#;

/// A VMA as both sides see it: bounds, permissions, name, Rss kB, Swap kB.
type Row = (u64, u64, String, String, u64, u64);

/// The guest's smaps lines, as the program printed them.
fn from_smaps(out: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("VMA ")) {
        let kb = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
        if l.starts_with("Rss:") {
            rows.last_mut().unwrap().4 = kb(l);
        } else if l.starts_with("Swap:") {
            rows.last_mut().unwrap().5 = kb(l);
        } else {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (lo, hi) = f[0].split_once('-').unwrap();
            let name = f.get(5).map_or(String::new(), |s| s.to_string());
            rows.push((
                u64::from_str_radix(lo, 16).unwrap(),
                u64::from_str_radix(hi, 16).unwrap(),
                f[1].to_string(),
                name,
                0,
                0,
            ));
        }
    }
    rows
}

fn hex(v: &Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn vmas_view_matches_the_guests_own_smaps() {
    let dir = Scratch::new("vmas");
    let prog = compile("gcc", PROG, &dir.0, "vmas", &["-static"]);
    let root = dir.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(&prog, root.join("init")).unwrap();
    std::fs::write(root.join("data.txt"), vec![b'd'; 8192]).unwrap();
    let json = common::TempFile::absent("vmas.json");
    let json_arg = format!("--json={}", json.path());
    let run = boot(&["--initrd", root.to_str().unwrap(), "--inspect-at", "mark", "--inspect", "vmas,ps", &json_arg]);
    assert_eq!(run.status, 0, "{}", run.all());
    let guest = from_smaps(&run.stdout);
    assert!(guest.len() >= 8, "the program printed its smaps: {}", run.all());

    let lines: Vec<Value> =
        std::fs::read_to_string(json.path()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let view = lines.iter().find(|v| v["view"] == "vmas").unwrap_or_else(|| panic!("no vmas view: {}", run.all()));
    let data = &view["data"];
    assert_eq!(data["published"], true, "{data}");
    assert_eq!(data["consistent"], true, "{data}");
    let init = data["procs"].as_array().unwrap().iter().find(|p| p["name"] == "init").expect("init's VMAs");
    let host: Vec<Row> = init["vmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                hex(&v["start"]),
                hex(&v["end"]),
                v["perms"].as_str().unwrap().to_string(),
                v["name"].as_str().unwrap().to_string(),
                v["rss_kb"].as_u64().unwrap(),
                v["swap_kb"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(host, guest, "the host's VMAs (from the descriptor and page tables) against the guest's smaps");

    // What the program made, as the host names it.
    let by_start = |s: u64| {
        init["vmas"].as_array().unwrap().iter().find(|v| hex(&v["start"]) == s).unwrap_or_else(|| panic!("{init}"))
    };
    let a = by_start(0x1000_0000);
    assert_eq!((a["kind"].as_str(), hex(&a["end"]), a["rss_kb"].as_u64()), (Some("anon"), 0x1000_4000, Some(8)));
    assert_eq!(by_start(0x1000_4000)["perms"], "r--p", "mprotect split the mapping");
    let z = by_start(0x1010_0000);
    assert_eq!((z["rss_kb"].as_u64(), z["zero_pages"].as_u64()), (Some(0), Some(2)), "zero-page reads: {z}");
    assert_eq!(by_start(0x1020_0000)["perms"], "rw-s");
    let f = by_start(0x1030_0000);
    assert_eq!((f["kind"].as_str(), f["name"].as_str()), (Some("file"), Some("/data.txt")), "{f}");
    let h = by_start(0x2000_0000);
    assert_eq!(h["thp_eligible"], true, "MADV_HUGEPAGE in madvise mode: {h}");
    assert_eq!(a["thp_eligible"], false, "32 KiB holds no huge page");
    let kinds: Vec<&str> = init["vmas"].as_array().unwrap().iter().map(|v| v["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"heap") && kinds.contains(&"stack"), "{kinds:?}");

    // The VMAs' Rss adds up to ps's.
    let ps = lines.iter().find(|v| v["view"] == "ps").unwrap();
    let rss_pages =
        ps["data"]["procs"].as_array().unwrap().iter().find(|p| p["name"] == "init").unwrap()["rss"].as_u64().unwrap();
    assert_eq!(init["rss_kb"].as_u64().unwrap(), rss_pages * 4, "{init}");

    // The text view, and a pid that does not exist.
    let text = boot(&["--initrd", root.to_str().unwrap(), "--inspect-at", "mark", "--inspect", "vmas:1"]);
    assert_eq!(text.status, 0, "{}", text.all());
    let all = format!("{}{}", text.stdout, text.stderr);
    assert!(all.contains("/data.txt") && all.contains("[heap]") && all.contains("[stack]"), "{all}");
    assert!(all.contains("rw-s") && all.contains("Rss kB"), "{all}");
    let bad = boot(&["--initrd", root.to_str().unwrap(), "--inspect-at", "mark", "--inspect", "vmas:4000"]);
    let all = format!("{}{}", bad.stdout, bad.stderr);
    assert!(all.contains("no process 4000 in the guest"), "{all}");
}
