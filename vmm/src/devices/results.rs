//! The self-test results channel: the guest writes one line per check,
//! `<group> <name> pass|fail [detail]`, and the VMM collects them so tests
//! and users get structured results rather than scraping the console.

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TestRecord {
    /// Group (e.g. `buddy`).
    pub group: String,
    /// Check name.
    pub name: String,
    /// Passed?
    pub passed: bool,
    /// Free text the guest attached.
    pub detail: String,
}

/// Accumulates records from the byte stream.
#[derive(Debug, Default)]
pub struct ResultsChannel {
    line: Vec<u8>,
    /// Records parsed so far.
    pub records: Vec<TestRecord>,
    /// Lines that did not parse (a guest bug worth seeing), at most
    /// [`MAX_MALFORMED`].
    pub malformed: Vec<String>,
    /// Lines dropped beyond [`MAX_RECORDS`] / [`MAX_MALFORMED`].
    pub dropped: u64,
    /// Checks reported so far and of them failed, readable from other
    /// threads while the guest runs (the progress line).
    pub live: std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>,
}

/// Most records kept: far above the guest's suite (a few hundred checks);
/// a guest that floods the port cannot make the VMM grow without bound.
pub const MAX_RECORDS: usize = 1 << 14;
/// Most malformed lines kept (an empty line is one).
pub const MAX_MALFORMED: usize = 64;

/// Guest-controlled text made safe for a terminal: control characters
/// (ANSI escapes, carriage returns, backspaces...) and Unicode
/// look-alikes are shown escaped (`\x1b`, `\r`), printable text as is.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Longest line kept: a guest that never sends a newline cannot make the
/// VMM grow without bound.
const MAX_LINE: usize = 4096;

impl ResultsChannel {
    /// Feeds bytes from the port.
    pub fn push_bytes(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                self.parse(&line);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn parse(&mut self, line: &str) {
        if self.records.len() >= MAX_RECORDS {
            self.dropped += 1;
            return;
        }
        let mut it = line.splitn(4, ' ');
        let (group, name, status) = (it.next(), it.next(), it.next());
        let passed = match status {
            Some("pass") => true,
            Some("fail") => false,
            _ => {
                if self.malformed.len() < MAX_MALFORMED {
                    self.malformed.push(line.to_string());
                } else {
                    self.dropped += 1;
                }
                return;
            }
        };
        self.live[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !passed {
            self.live[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.records.push(TestRecord {
            group: group.unwrap_or_default().to_string(),
            name: name.unwrap_or_default().to_string(),
            passed,
            detail: it.next().unwrap_or("").to_string(),
        });
    }

    /// (passed, failed).
    pub fn counts(&self) -> (usize, usize) {
        let passed = self.records.iter().filter(|r| r.passed).count();
        (passed, self.records.len() - passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_records() {
        let mut c = ResultsChannel::default();
        c.push_bytes(b"buddy alloc_order_3 pass 8 blocks\nslab ");
        c.push_bytes(b"uaf fail poison intact\ngarbage\n");
        assert_eq!(c.records.len(), 2);
        assert_eq!(c.records[0].detail, "8 blocks");
        assert!(!c.records[1].passed);
        assert_eq!(c.counts(), (1, 1));
        assert_eq!(c.malformed, vec!["garbage".to_string()]);
    }

    #[test]
    fn a_flood_is_bounded_and_counted() {
        let mut c = ResultsChannel::default();
        c.push_bytes(&vec![b'\n'; 1 << 20]);
        assert_eq!(c.malformed.len(), MAX_MALFORMED);
        assert_eq!(c.dropped, (1 << 20) - MAX_MALFORMED as u64);
        for _ in 0..MAX_RECORDS + 5 {
            c.push_bytes(b"g n pass\n");
        }
        assert_eq!(c.records.len(), MAX_RECORDS);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("ok \x1b[2J\rx\u{7}"), "ok \\u{1b}[2J\\rx\\u{7}");
        assert_eq!(escape("plain text, été"), "plain text, été");
    }
}
