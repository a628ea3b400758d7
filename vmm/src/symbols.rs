//! Guest symbols from an ELF symbol table, so a crash report can say
//! `kmain+0x42` instead of a bare address.
//!
//! The table of an embedded image is built on first use: most runs never
//! name an address, and parsing and demangling thousands of symbols would
//! sit on every boot's critical path.

use object::{Object, ObjectSymbol, SymbolKind};
use std::sync::{Arc, OnceLock};

/// Function and object symbols of one or more ELFs, sorted by address.
/// Cloning shares the table.
#[derive(Debug, Default, Clone)]
pub struct Symbols {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// ELFs not parsed yet.
    lazy: Vec<&'static [u8]>,
    /// Symbols parsed eagerly.
    parsed: Vec<Sym>,
    table: OnceLock<Vec<Sym>>,
}

#[derive(Debug, Clone)]
struct Sym {
    addr: u64,
    size: u64,
    name: String,
}

impl Symbols {
    /// Reads the symbol table of `elf` (empty if it has none or is not an
    /// ELF: symbols are a convenience, never a reason to fail).
    pub fn from_elf(elf: &[u8]) -> Self {
        Symbols { inner: Arc::new(Inner { parsed: parse(elf), ..Default::default() }) }
    }

    /// The symbols of an ELF that lives for the whole run (an embedded
    /// image), read when first needed.
    pub fn from_static(elf: &'static [u8]) -> Self {
        Symbols { inner: Arc::new(Inner { lazy: vec![elf], ..Default::default() }) }
    }

    /// Adds another image's symbols (the firmware beside the kernel).
    pub fn merge(&mut self, other: Symbols) {
        let mut lazy = self.inner.lazy.clone();
        lazy.extend(other.inner.lazy.iter().copied());
        let mut parsed = self.inner.parsed.clone();
        parsed.extend(other.inner.parsed.iter().cloned());
        self.inner = Arc::new(Inner { lazy, parsed, table: OnceLock::new() });
    }

    fn syms(&self) -> &[Sym] {
        self.inner.table.get_or_init(|| {
            let mut all = self.inner.parsed.clone();
            for elf in &self.inner.lazy {
                all.extend(parse(elf));
            }
            all.sort_by_key(|s| s.addr);
            all
        })
    }

    /// The symbol containing `addr` and the offset into it. A symbol with
    /// no size (assembly labels) covers up to the next symbol, at most 64 KiB.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms().partition_point(|s| s.addr <= addr).checked_sub(1)?;
        // Prefer a sized symbol that contains addr among those at the same start.
        let s = &self.syms()[i];
        let off = addr - s.addr;
        let limit = if s.size > 0 {
            s.size
        } else {
            self.syms().get(i + 1).map_or(64 * 1024, |n| (n.addr - s.addr).min(64 * 1024))
        };
        (off < limit).then_some((s.name.as_str(), off))
    }

    /// The address of a symbol by exact (demangled) name.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.syms().iter().find(|s| s.name == name).map(|s| s.addr)
    }

    /// The address of the one symbol whose name ends with `suffix`; None
    /// when no symbol or several do.
    pub fn unique_suffix(&self, suffix: &str) -> Option<u64> {
        let mut found = self.syms().iter().filter(|s| s.name.ends_with(suffix));
        let first = found.next()?;
        found.all(|s| s.addr == first.addr).then_some(first.addr)
    }

    /// `name+0xoff` or `?`.
    pub fn describe(&self, addr: u64) -> String {
        match self.lookup(addr) {
            Some((n, 0)) => n.to_string(),
            Some((n, off)) => format!("{n}+{off:#x}"),
            None => "?".to_string(),
        }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.syms().len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.syms().is_empty()
    }
}

fn parse(elf: &[u8]) -> Vec<Sym> {
    let Ok(file) = object::File::parse(elf) else {
        return Vec::new();
    };
    file.symbols()
        .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown))
        .filter(|s| s.address() != 0)
        .filter_map(|s| {
            let name = s.name().ok()?;
            if name.is_empty() || name.starts_with(".L") {
                return None;
            }
            Some(Sym { addr: s.address(), size: s.size(), name: format!("{:#}", rustc_demangle::demangle(name)) })
        })
        .collect()
}
