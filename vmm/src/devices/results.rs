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
    /// Lines that did not parse (a guest bug worth seeing).
    pub malformed: Vec<String>,
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
        let mut it = line.splitn(4, ' ');
        let (group, name, status) = (it.next(), it.next(), it.next());
        let passed = match status {
            Some("pass") => true,
            Some("fail") => false,
            _ => {
                self.malformed.push(line.to_string());
                return;
            }
        };
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
}
