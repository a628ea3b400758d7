//! Guest symbols from an ELF symbol table, so a crash report can say
//! `kmain+0x42` instead of a bare address.

use object::{Object, ObjectSymbol, SymbolKind};

/// Function and object symbols of one ELF, sorted by address.
#[derive(Debug, Default, Clone)]
pub struct Symbols {
    syms: Vec<Sym>,
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
        let Ok(file) = object::File::parse(elf) else {
            return Symbols::default();
        };
        let mut syms: Vec<Sym> = file
            .symbols()
            .filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Data | SymbolKind::Unknown))
            .filter(|s| s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                if name.is_empty() || name.starts_with(".L") {
                    return None;
                }
                Some(Sym { addr: s.address(), size: s.size(), name: format!("{:#}", rustc_demangle::demangle(name)) })
            })
            .collect();
        syms.sort_by_key(|s| s.addr);
        Symbols { syms }
    }

    /// Adds another image's symbols (the firmware beside the kernel).
    pub fn merge(&mut self, other: Symbols) {
        self.syms.extend(other.syms);
        self.syms.sort_by_key(|s| s.addr);
    }

    /// The symbol containing `addr` and the offset into it. A symbol with
    /// no size (assembly labels) covers up to the next symbol, at most 64 KiB.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|s| s.addr <= addr).checked_sub(1)?;
        // Prefer a sized symbol that contains addr among those at the same start.
        let s = &self.syms[i];
        let off = addr - s.addr;
        let limit = if s.size > 0 {
            s.size
        } else {
            self.syms.get(i + 1).map_or(64 * 1024, |n| (n.addr - s.addr).min(64 * 1024))
        };
        (off < limit).then_some((s.name.as_str(), off))
    }

    /// The address of a symbol by exact (demangled) name.
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.syms.iter().find(|s| s.name == name).map(|s| s.addr)
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
        self.syms.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}
