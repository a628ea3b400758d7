//! The mm-emulator VMM: boots the guest kernel on KVM and inspects it.
//!
//! Modules by concern: [`kvm`] opens the device, [`memory`] and [`layout`]
//! own guest RAM and its map, [`boot`] loads the kernel and prepares the
//! entry (direct or firmware), [`devices`] are the port-I/O devices,
//! [`vcpu`] runs the vCPU and reports crashes, [`inspect`] reads guest
//! memory through mm-core's software MMU, [`eventloop`] multiplexes
//! host I/O, [`gdb`] is the gdb remote stub, [`vm`] ties them together,
//! [`cli`] is the command line, [`snapshot`] writes and reads snapshot
//! files (ELF core files of guest RAM and vCPU) for offline inspection,
//! [`profile`] counts the guest kernel's instructions, [`web`] is the live
//! web view and [`progress`] the terminal's progress line; [`fuzz`] holds
//! the fuzz targets' bodies.

pub mod boot;
pub mod cli;
pub mod devices;
pub mod eventloop;
pub mod fuzz;
pub mod gdb;
pub mod inspect;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod numa;
pub mod profile;
pub mod progress;
pub mod snapshot;
pub mod symbols;
pub mod vcpu;
pub mod vm;
pub mod web;

/// ELF parsers read headers in place and need them aligned; `include_bytes!`
/// alone guarantees byte alignment only.
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

static GUEST_ELF: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("MMEMU_GUEST_ELF")));
static FIRMWARE_ELF: &Aligned<[u8]> = &Aligned(*include_bytes!(env!("MMEMU_FIRMWARE_ELF")));

/// The guest kernel built from guest/ by build.rs.
pub static EMBEDDED_GUEST: &[u8] = &GUEST_ELF.0;
/// The real-mode firmware built from firmware/ by build.rs.
pub static EMBEDDED_FIRMWARE: &[u8] = &FIRMWARE_ELF.0;
