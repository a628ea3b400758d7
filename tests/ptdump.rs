//! The kernel's page-table dump as Linux's ptdump prints it
//! (/sys/kernel/debug/page_tables/current_user): a run goes on while the
//! flags and the level stay the same, wherever the frames are. A program
//! touches 16 pages in reverse order (so their frames are not in address
//! order), reads its own dump, then write-protects the middle page and
//! reads it again: one 64K line first, then three (RW, ro, RW).

mod common;

const PROG: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define PAGES 16
#define PAGE 4096UL

/* The dump's lines inside [p, p + len), as printed. */
static void dump(const char *tag, unsigned long p, unsigned long len) {
    char line[160];
    FILE *f = fopen("/sys/kernel/debug/page_tables/current_user", "r");
    if (!f) {
        printf("%s: cannot open the dump\n", tag);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "0x%lx-0x%lx", &s, &e) == 2 && s >= p && e <= p + len)
            printf("%s: +%#lx-+%#lx%s", tag, s - p, e - p, line + 37);
    }
    fclose(f);
}

int main(void) {
    unsigned char *m = mmap(0, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return 1;
    for (int i = PAGES - 1; i >= 0; i--)
        m[i * PAGE] = i + 1;
    /* Frames the kernel handed out: in address order or not. */
    int ascending = 1;
    FILE *pm = fopen("/proc/self/pagemap", "r");
    unsigned long prev = 0;
    for (int i = 0; pm && i < PAGES; i++) {
        unsigned long e = 0;
        fseek(pm, ((unsigned long)m / PAGE + i) * 8, SEEK_SET);
        fread(&e, 8, 1, pm);
        unsigned long pfn = e & ((1UL << 55) - 1);
        if (i && pfn != prev + 1)
            ascending = 0;
        prev = pfn;
    }
    if (pm)
        fclose(pm);
    printf("frames contiguous in address order: %d\n", ascending);
    dump("touched", (unsigned long)m, PAGES * PAGE);
    mprotect(m + 8 * PAGE, PAGE, PROT_READ);
    dump("mprotected", (unsigned long)m, PAGES * PAGE);
    return 0;
}
"#;

#[test]
fn current_user_merges_by_flags_and_level_as_linux() {
    let r = common::run_c_init("ptdump", PROG, &["--timeout", "300", "--mem", "64M"]);
    common::assert_stdout_has(
        &r,
        &[
            // The frames are scattered (the test means something only so).
            "frames contiguous in address order: 0\n",
            "touched: +0-+0x10000          64K USR RW                 NX pte\n",
            "mprotected: +0-+0x8000          32K USR RW                 NX pte\n",
            "mprotected: +0x8000-+0x9000           4K USR ro                 NX pte\n",
            "mprotected: +0x9000-+0x10000          28K USR RW                 NX pte\n",
        ],
    );
    let touched = r.stdout.lines().filter(|l| l.starts_with("touched:")).count();
    assert_eq!(touched, 1, "one line for the whole run: {}", r.all());
}
