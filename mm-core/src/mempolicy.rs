//! NUMA memory policies (Linux's `mm/mempolicy.c`): the modes and flags
//! of set_mempolicy(2), mbind(2) and get_mempolicy(2) with Linux's
//! numbers, the checks that turn a user's request into a policy (with
//! Linux's errno for bad ones), and the node an allocation under a policy
//! prefers and may use (`policy_nodemask`, `interleave_nid`).

use crate::buddy::{Gfp, NODEMASK_ALL, NUMA_NO_NODE};

/// `MPOL_DEFAULT`: the task's policy, or local allocation.
pub const MPOL_DEFAULT: i64 = 0;
/// `MPOL_PREFERRED`: one node first, then the usual fallback.
pub const MPOL_PREFERRED: i64 = 1;
/// `MPOL_BIND`: only the mask's nodes (nearest first).
pub const MPOL_BIND: i64 = 2;
/// `MPOL_INTERLEAVE`: pages round-robin over the mask's nodes.
pub const MPOL_INTERLEAVE: i64 = 3;
/// `MPOL_LOCAL`: the allocating CPU's node.
pub const MPOL_LOCAL: i64 = 4;
/// First mode number Linux does not know here (`MPOL_MAX` without
/// preferred-many and weighted interleave).
pub const MPOL_MAX: i64 = 5;
/// `MPOL_F_STATIC_NODES` mode flag.
pub const MPOL_F_STATIC_NODES: i64 = 1 << 15;
/// `MPOL_F_RELATIVE_NODES` mode flag.
pub const MPOL_F_RELATIVE_NODES: i64 = 1 << 14;
/// `MPOL_F_NUMA_BALANCING` mode flag.
pub const MPOL_F_NUMA_BALANCING: i64 = 1 << 13;
/// get_mempolicy: return the node (of `addr`'s page, or the next
/// interleave node).
pub const MPOL_F_NODE: u64 = 1 << 0;
/// get_mempolicy: the policy of the VMA at `addr`.
pub const MPOL_F_ADDR: u64 = 1 << 1;
/// get_mempolicy: the nodes the task may use.
pub const MPOL_F_MEMS_ALLOWED: u64 = 1 << 2;
/// mbind: fail with EIO if existing pages do not follow the policy.
pub const MPOL_MF_STRICT: u64 = 1 << 0;
/// mbind: move existing pages (accepted; pages already placed stay).
pub const MPOL_MF_MOVE: u64 = 1 << 1;
/// mbind: move pages shared with other processes too.
pub const MPOL_MF_MOVE_ALL: u64 = 1 << 2;

/// Linux's `EINVAL`.
pub const EINVAL: i64 = 22;
/// Linux's `EFAULT`.
pub const EFAULT: i64 = 14;
/// Linux's `EIO`.
pub const EIO: i64 = 5;

/// A policy's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No policy of its own (the task's, or local).
    #[default]
    Default,
    /// Prefer one node.
    Preferred,
    /// Only these nodes.
    Bind,
    /// Round-robin over these nodes.
    Interleave,
    /// The allocating CPU's node.
    Local,
}

impl Mode {
    /// Linux's number for the mode.
    pub const fn number(self) -> i64 {
        match self {
            Mode::Default => MPOL_DEFAULT,
            Mode::Preferred => MPOL_PREFERRED,
            Mode::Bind => MPOL_BIND,
            Mode::Interleave => MPOL_INTERLEAVE,
            Mode::Local => MPOL_LOCAL,
        }
    }

    /// The name /proc/PID/numa_maps uses.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Preferred => "prefer",
            Mode::Bind => "bind",
            Mode::Interleave => "interleave",
            Mode::Local => "local",
        }
    }
}

/// A memory policy: the mode, its nodes (bit per node) and the mode
/// flags given (`MPOL_F_STATIC_NODES`/`RELATIVE_NODES`, kept for
/// get_mempolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemPolicy {
    /// The mode.
    pub mode: Mode,
    /// The nodes (bind, interleave: the set; preferred: one bit).
    pub nodes: u8,
    /// Mode flags as given.
    pub flags: u16,
}

impl MemPolicy {
    /// The default policy (no policy of its own).
    pub const DEFAULT: MemPolicy = MemPolicy { mode: Mode::Default, nodes: 0, flags: 0 };

    /// Whether this is the default policy.
    pub fn is_default(&self) -> bool {
        self.mode == Mode::Default
    }

    /// Linux's `do_set_mempolicy`/`do_mbind` checks (`sanitize_mpol_flags`,
    /// `mpol_new`, `mpol_set_nodemask`): `mode` with its flags, `user`
    /// the nodes the caller named (already read with [`read_nodemask`]),
    /// `present` the nodes that have memory. Errors are Linux's errno
    /// (positive).
    pub fn from_user(mode: i64, user: u64, present: u8) -> Result<MemPolicy, i64> {
        let (m, flags) = sanitize_mode(mode)?;
        let flags = flags as u16;
        let nodes = (user & u64::from(present)) as u8;
        match m {
            MPOL_DEFAULT => {
                if user != 0 {
                    return Err(EINVAL);
                }
                Ok(MemPolicy::DEFAULT)
            }
            MPOL_LOCAL => {
                if user != 0 {
                    return Err(EINVAL);
                }
                Ok(MemPolicy { mode: Mode::Local, nodes: 0, flags })
            }
            MPOL_PREFERRED => {
                if user == 0 {
                    // An empty mask means local allocation, unless a
                    // static or relative node flag asks for nodes.
                    if flags != 0 {
                        return Err(EINVAL);
                    }
                    return Ok(MemPolicy { mode: Mode::Local, nodes: 0, flags });
                }
                if nodes == 0 {
                    return Err(EINVAL);
                }
                Ok(MemPolicy { mode: Mode::Preferred, nodes: 1 << nodes.trailing_zeros(), flags })
            }
            _ => {
                // Bind and interleave need at least one node with memory.
                if nodes == 0 {
                    return Err(EINVAL);
                }
                let mode = if m == MPOL_BIND { Mode::Bind } else { Mode::Interleave };
                Ok(MemPolicy { mode, nodes, flags })
            }
        }
    }

    /// The mode number with its flags, as get_mempolicy returns it.
    pub fn user_mode(&self) -> i64 {
        self.mode.number() | i64::from(self.flags)
    }

    /// The node mask get_mempolicy returns (Linux's `get_policy_nodemask`):
    /// the nodes for bind and interleave, the node for preferred, none
    /// for default and local.
    pub fn user_nodes(&self) -> u8 {
        match self.mode {
            Mode::Bind | Mode::Interleave | Mode::Preferred => self.nodes,
            Mode::Default | Mode::Local => 0,
        }
    }

    /// The request a page allocation under this policy makes
    /// (`policy_nodemask` + `interleave_nid`): `ilx` is the interleave
    /// index (the page's offset in its VMA's object, see
    /// [`interleave_index`]), `local` the allocating CPU's node. Returns
    /// the request and whether interleave chose its node.
    pub fn apply(&self, gfp: Gfp, ilx: u64, local: u8) -> (Gfp, bool) {
        match self.mode {
            Mode::Default | Mode::Local => (gfp.on_nodes(NUMA_NO_NODE, NODEMASK_ALL), false),
            Mode::Preferred => (gfp.on_nodes(self.nodes.trailing_zeros() as u8, NODEMASK_ALL), false),
            // The nearest allowed node first: the local node's zonelist
            // filtered by the mask (Linux prefers the local node if it is
            // in the mask; the zonelist walk does the rest).
            Mode::Bind => {
                let nid = if self.nodes & (1 << (local & 7)) != 0 { local } else { self.nodes.trailing_zeros() as u8 };
                (gfp.on_nodes(nid, self.nodes), false)
            }
            Mode::Interleave => (gfp.on_nodes(offset_il_node(self.nodes, ilx), NODEMASK_ALL), true),
        }
    }
}

/// Linux's `sanitize_mpol_flags`: splits `mode` into the mode number
/// and its flags, EINVAL for an unknown mode or a bad flag combination.
/// The system calls check this before reading the node mask, as Linux.
pub fn sanitize_mode(mode: i64) -> Result<(i64, i64), i64> {
    let flags = mode & (MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING);
    let m = mode & !(MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING);
    if !(0..MPOL_MAX).contains(&m) {
        return Err(EINVAL);
    }
    if flags & MPOL_F_STATIC_NODES != 0 && flags & MPOL_F_RELATIVE_NODES != 0 {
        return Err(EINVAL);
    }
    // MPOL_F_NUMA_BALANCING is only valid with MPOL_BIND (and
    // preferred-many, which is not here).
    if flags & MPOL_F_NUMA_BALANCING != 0 && m != MPOL_BIND {
        return Err(EINVAL);
    }
    Ok((m, flags))
}

/// The policy as /proc/PID/numa_maps prints it (Linux's `mpol_to_str`):
/// `default`, `local`, `prefer:1`, `bind:0-1`, `interleave:0,2`, with
/// `=static` or `=relative` after the mode when given.
pub fn policy_str(p: &MemPolicy, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    out.write_str(p.mode.name())?;
    if matches!(p.mode, Mode::Default | Mode::Local) {
        return Ok(());
    }
    if p.flags & MPOL_F_STATIC_NODES as u16 != 0 {
        out.write_str("=static")?;
    } else if p.flags & MPOL_F_RELATIVE_NODES as u16 != 0 {
        out.write_str("=relative")?;
    }
    out.write_char(':')?;
    write_nodelist(p.nodes, out)
}

/// A node mask as Linux's `%*pbl` prints it: runs as a list, `0-2,5`;
/// nothing for an empty mask.
pub fn write_nodelist(nodes: u8, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
    let mut first = true;
    let mut n = 0u32;
    while n < 8 {
        if nodes & (1 << n) == 0 {
            n += 1;
            continue;
        }
        let mut e = n;
        while e + 1 < 8 && nodes & (1 << (e + 1)) != 0 {
            e += 1;
        }
        if !first {
            out.write_char(',')?;
        }
        first = false;
        crate::fmt::write_dec(out, u64::from(n), 0)?;
        if e > n {
            out.write_char('-')?;
            crate::fmt::write_dec(out, u64::from(e), 0)?;
        }
        n = e + 1;
    }
    Ok(())
}

/// Linux's `constrained_alloc`, its memory-policy part: a failed
/// allocation whose node mask leaves out a node with memory (`present`)
/// was narrowed by a policy (MPOL_BIND), so its OOM is
/// `CONSTRAINT_MEMORY_POLICY`: only tasks that may use those nodes are
/// worth killing, and the memory counted is theirs.
pub fn oom_policy_constrained(nodemask: u8, present: u8) -> bool {
    present & !nodemask != 0
}

/// Linux's `mempolicy_in_oom_domain`: whether a task with policy `task`
/// may be killed for a policy-constrained OOM over `mask`. Only a task
/// bound elsewhere (MPOL_BIND to nodes outside the mask) is left alone:
/// any other policy may have placed pages on the mask's nodes.
pub fn in_oom_domain(task: &MemPolicy, mask: u8) -> bool {
    task.mode != Mode::Bind || task.nodes & mask != 0
}

/// Linux's `next_node_in`: the first node of `nodes` after `prev`,
/// wrapping round (`prev` 7 or more: the first); 0 for an empty mask.
pub fn next_node_in(prev: u8, nodes: u8) -> u8 {
    let after = if prev >= 7 { 0 } else { nodes & !((2u16 << prev) - 1) as u8 };
    if after != 0 {
        after.trailing_zeros() as u8
    } else if nodes != 0 {
        nodes.trailing_zeros() as u8
    } else {
        0
    }
}

/// `migrate_pages(2)`'s number on x86-64.
pub const SYS_MIGRATE_PAGES: u64 = 256;
/// Linux's `ESRCH`.
pub const ESRCH: i64 = 3;

/// Linux's `node_remap`: `node`'s position among `from`'s nodes picks
/// the node at that position (modulo their number) among `to`'s; `node`
/// itself if it is not in `from` or `to` is empty.
pub fn node_remap(node: u8, from: u8, to: u8) -> u8 {
    if node >= 8 || from & (1 << node) == 0 || to == 0 {
        return node;
    }
    let ord = (from & ((1u16 << node) - 1) as u8).count_ones();
    offset_il_node(to, u64::from(ord))
}

/// Linux's `do_migrate_pages` order of moves for `migrate_pages(2)` from
/// the nodes `from` to the nodes `to`: (source, destination) pairs, each
/// source once, a node emptied before it receives pages where the map
/// allows (so pages move once). With masks of unequal weight a source
/// that is also a destination stays.
pub fn migrate_pairs(from: u8, to: u8) -> alloc::vec::Vec<(u8, u8)> {
    let mut out = alloc::vec::Vec::new();
    let mut tmp = from;
    let equal = from.count_ones() == to.count_ones();
    while tmp != 0 {
        let mut pick = None;
        for s in 0..8u8 {
            if tmp & (1 << s) == 0 {
                continue;
            }
            if !equal && to & (1 << s) != 0 {
                continue;
            }
            let d = node_remap(s, from, to);
            if s == d {
                continue;
            }
            pick = Some((s, d));
            if tmp & (1 << d) == 0 {
                break;
            }
        }
        let Some((s, d)) = pick else { break };
        tmp &= !(1 << s);
        out.push((s, d));
    }
    out
}

/// Linux's `offset_il_node`: the `ilx % weight`-th node of `nodes`.
pub fn offset_il_node(nodes: u8, ilx: u64) -> u8 {
    let w = u64::from(nodes.count_ones());
    if w == 0 {
        return 0;
    }
    let mut target = ilx % w;
    let mut n = nodes;
    loop {
        let nid = n.trailing_zeros() as u8;
        if target == 0 {
            return nid;
        }
        n &= n - 1;
        target -= 1;
    }
}

/// Linux's interleave index for a page at `addr` of a VMA starting at
/// `vm_start` with page offset `pgoff` (`interleave_nid`): the page's
/// offset in the object, so every mapping of it interleaves alike.
pub fn interleave_index(vm_start: u64, pgoff: u64, addr: u64) -> u64 {
    pgoff.wrapping_add(addr.saturating_sub(vm_start) >> 12)
}

/// Linux's `get_nodes`: the node mask from the user's `maxnode` bits
/// (`maxnode - 1` are read, as Linux's off-by-one), where `words` reads
/// `n` 64-bit words of the user's mask (None: a fault). Bits beyond the
/// first word (this kernel's `MAX_NUMNODES` is 64 for the ABI) must be
/// zero, or EINVAL; a null mask or `maxnode` 0 or 1 is empty.
pub fn read_nodemask(
    nmask_is_null: bool,
    maxnode: u64,
    words: &mut dyn FnMut(usize) -> Option<u64>,
) -> Result<u64, i64> {
    let maxnode = maxnode.saturating_sub(1);
    if nmask_is_null || maxnode == 0 {
        return Ok(0);
    }
    if maxnode > 4096 * 8 {
        return Err(EINVAL);
    }
    let nwords = maxnode.div_ceil(64) as usize;
    let mut first = 0;
    for i in 0..nwords {
        let mut w = words(i).ok_or(EFAULT)?;
        let bits = maxnode - 64 * i as u64;
        if bits < 64 {
            w &= (1u64 << bits) - 1;
        }
        if i == 0 {
            first = w;
        } else if w != 0 {
            return Err(EINVAL);
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::GFP_KERNEL;

    #[test]
    fn oom_constraint_and_domain_as_linux() {
        // Two nodes with memory: a bind to node 1 is constrained, a bind
        // to both (or no mask) is not; absent nodes do not count.
        assert!(oom_policy_constrained(0b10, 0b11));
        assert!(!oom_policy_constrained(0b11, 0b11));
        assert!(!oom_policy_constrained(NODEMASK_ALL, 0b11));
        assert!(!oom_policy_constrained(0b01, 0b01));
        let bind = |nodes| MemPolicy { mode: Mode::Bind, nodes, flags: 0 };
        assert!(!in_oom_domain(&bind(0b01), 0b10));
        assert!(in_oom_domain(&bind(0b11), 0b10));
        assert!(in_oom_domain(&MemPolicy::DEFAULT, 0b10));
        // Preferred and interleave elsewhere may still hold pages there.
        assert!(in_oom_domain(&MemPolicy { mode: Mode::Preferred, nodes: 0b01, flags: 0 }, 0b10));
        assert!(in_oom_domain(&MemPolicy { mode: Mode::Interleave, nodes: 0b01, flags: 0 }, 0b10));
        assert_eq!(next_node_in(7, 0b101), 0);
        assert_eq!(next_node_in(0, 0b101), 2);
        assert_eq!(next_node_in(2, 0b101), 0);
        assert_eq!(next_node_in(1, 0b10), 1);
        let mut s = alloc::string::String::new();
        write_nodelist(0b1011_0111, &mut s).unwrap();
        assert_eq!(s, "0-2,4-5,7");
    }

    #[test]
    fn migrate_pages_order_as_linux() {
        assert_eq!(node_remap(1, 0b011, 0b110), 2);
        assert_eq!(node_remap(0, 0b011, 0b110), 1);
        assert_eq!(node_remap(2, 0b011, 0b110), 2);
        assert_eq!(migrate_pairs(0b01, 0b10), [(0, 1)]);
        assert_eq!(migrate_pairs(0b10, 0b01), [(1, 0)]);
        // 1 -> 2 first, so node 1 is empty before 0 -> 1 fills it.
        assert_eq!(migrate_pairs(0b011, 0b110), [(1, 2), (0, 1)]);
        // Same nodes: nothing to move.
        assert!(migrate_pairs(0b11, 0b11).is_empty());
        // Unequal weights: node 1 is a destination, its pages stay.
        assert_eq!(migrate_pairs(0b011, 0b010), [(0, 1)]);
        assert_eq!(migrate_pairs(0b001, 0b110), [(0, 1)]);
    }

    #[test]
    fn modes_and_errors_as_linux() {
        let present = 0b11;
        assert_eq!(MemPolicy::from_user(MPOL_DEFAULT, 0, present), Ok(MemPolicy::DEFAULT));
        assert_eq!(MemPolicy::from_user(MPOL_DEFAULT, 1, present), Err(EINVAL));
        assert_eq!(MemPolicy::from_user(5, 1, present), Err(EINVAL));
        assert_eq!(MemPolicy::from_user(-1, 1, present), Err(EINVAL));
        assert_eq!(MemPolicy::from_user(MPOL_BIND, 0, present), Err(EINVAL));
        assert_eq!(MemPolicy::from_user(MPOL_INTERLEAVE, 0, present), Err(EINVAL));
        // Only absent nodes: empty after the intersection.
        assert_eq!(MemPolicy::from_user(MPOL_BIND, 0b100, present), Err(EINVAL));
        assert_eq!(MemPolicy::from_user(MPOL_BIND, 0b110, present).unwrap().nodes, 0b10);
        assert_eq!(MemPolicy::from_user(MPOL_LOCAL, 1, present), Err(EINVAL));
        assert_eq!(MemPolicy::from_user(MPOL_PREFERRED, 0, present).unwrap().mode, Mode::Local);
        assert_eq!(MemPolicy::from_user(MPOL_PREFERRED, 0b11, present).unwrap().nodes, 0b01);
        assert_eq!(
            MemPolicy::from_user(MPOL_BIND | MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES, 1, present),
            Err(EINVAL)
        );
        let p = MemPolicy::from_user(MPOL_INTERLEAVE | MPOL_F_STATIC_NODES, 0b11, present).unwrap();
        assert_eq!(p.user_mode(), MPOL_INTERLEAVE | MPOL_F_STATIC_NODES);
    }

    #[test]
    fn interleave_round_robin_over_the_mask() {
        assert_eq!((0..6).map(|i| offset_il_node(0b11, i)).collect::<alloc::vec::Vec<_>>(), [0, 1, 0, 1, 0, 1]);
        assert_eq!((0..4).map(|i| offset_il_node(0b1010, i)).collect::<alloc::vec::Vec<_>>(), [1, 3, 1, 3]);
        assert_eq!(interleave_index(0x10000, 0x10, 0x13000), 0x13);
        let p = MemPolicy { mode: Mode::Interleave, nodes: 0b11, flags: 0 };
        assert_eq!(p.apply(GFP_KERNEL, 3, 0), (GFP_KERNEL.on_nodes(1, NODEMASK_ALL), true));
    }

    #[test]
    fn bind_prefers_local_when_allowed() {
        let p = MemPolicy { mode: Mode::Bind, nodes: 0b10, flags: 0 };
        assert_eq!(p.apply(GFP_KERNEL, 0, 0).0, GFP_KERNEL.on_nodes(1, 0b10));
        let p = MemPolicy { mode: Mode::Bind, nodes: 0b11, flags: 0 };
        assert_eq!(p.apply(GFP_KERNEL, 0, 1).0, GFP_KERNEL.on_nodes(1, 0b11));
    }

    #[test]
    fn policy_strings_as_numa_maps() {
        let f = |p: MemPolicy| {
            let mut s = alloc::string::String::new();
            policy_str(&p, &mut s).unwrap();
            s
        };
        assert_eq!(f(MemPolicy::DEFAULT), "default");
        assert_eq!(f(MemPolicy { mode: Mode::Bind, nodes: 0b1, flags: 0 }), "bind:0");
        assert_eq!(f(MemPolicy { mode: Mode::Interleave, nodes: 0b1011, flags: 0 }), "interleave:0-1,3");
        assert_eq!(
            f(MemPolicy { mode: Mode::Preferred, nodes: 0b10, flags: MPOL_F_STATIC_NODES as u16 }),
            "prefer=static:1"
        );
        assert_eq!(f(MemPolicy { mode: Mode::Local, nodes: 0, flags: 0 }), "local");
    }

    #[test]
    fn nodemask_reading() {
        let mut w = |i: usize| Some([0b101u64, 0][i]);
        assert_eq!(read_nodemask(false, 3, &mut w), Ok(0b01)); // maxnode 3: 2 bits
        assert_eq!(read_nodemask(false, 65, &mut w), Ok(0b101));
        assert_eq!(read_nodemask(false, 129, &mut w), Ok(0b101));
        assert_eq!(read_nodemask(true, 65, &mut w), Ok(0));
        assert_eq!(read_nodemask(false, 1, &mut w), Ok(0));
        let mut high = |i: usize| Some([1u64, 1][i]);
        assert_eq!(read_nodemask(false, 129, &mut high), Err(EINVAL));
        assert_eq!(read_nodemask(false, 65, &mut |_| None), Err(EFAULT));
        assert_eq!(read_nodemask(false, 1 << 20, &mut w), Err(EINVAL));
    }
}
