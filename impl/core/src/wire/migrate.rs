//! sustain's own TCP options (PROTOCOL.md §3): Migrate-Permit, Migrate
//! (three forms) and Address-Update, each an RFC 6994 experimental option
//! (kind 253, length, 16-bit ExID, data), and Relay-Ticket (two forms) for
//! the relay handshake with the symmetric proxy (PROTOCOL.md §3.5).
//!
//! Each type parses and emits only the *data* part (after the ExID); the
//! option walker in [`super::options`] has already checked kind and length
//! bytes. [`MigrationOptions`] finds ours among a segment's experimental
//! options and attaches them to an outgoing [`TcpRepr`].
//!
//! Nothing here depends on sequence numbers or on addresses a NAPT rewrites:
//! the addresses carried are the sender's own (pre-NAPT) ones, and
//! connections are identified by token.

use core::net::{Ipv4Addr, SocketAddrV4};

use super::options::{EXPERIMENTAL_HEADER_LEN, EXPERIMENTAL_KIND};
use super::{ExperimentalOption, TcpRepr, WireError};

/// ExID of Migrate-Permit: first two bytes of SHA-256("sustain Migrate-Permit").
pub const EXID_MIGRATE_PERMIT: u16 = 0x5E9A;
/// ExID of Migrate: first two bytes of SHA-256("sustain Migrate").
pub const EXID_MIGRATE: u16 = 0x0A21;
/// ExID of Address-Update: first two bytes of SHA-256("sustain Address-Update").
pub const EXID_ADDRESS_UPDATE: u16 = 0x3B4C;
/// ExID of Relay-Ticket (PROTOCOL.md §3.5): first two bytes of
/// SHA-256("sustain Relay-Ticket").
pub const EXID_RELAY_TICKET: u16 = 0xAB48;

/// Bytes of truncated HMAC-SHA256 carried in Migrate and Address-Update.
pub const MAC_LEN: usize = 8;
/// A truncated HMAC-SHA256 (the leftmost [`MAC_LEN`] bytes).
pub type Mac = [u8; MAC_LEN];

/// The longest data part of any sustain option (the MSYN-ACK Migrate with
/// its received offset): one [`OptionScratch`] holds any of them.
pub const MAX_DATA_LEN: usize = 23;

/// The largest value of the 24-bit received offset of an MSYN-ACK
/// (PROTOCOL.md §3.3): a larger RCV.NXT - SEG.ACK is sent as this value.
pub const MAX_ACK_RECEIVED: u32 = 0x00ff_ffff;
/// Storage for one option's data while it sits in a [`TcpRepr`].
pub type OptionScratch = [u8; MAX_DATA_LEN];

/// The error for data of the wrong length for its ExID; `len` is the whole
/// option's length byte, as for every other option kind.
fn bad_length(data_len: usize) -> WireError {
    WireError::BadOptionLength {
        kind: EXPERIMENTAL_KIND,
        len: EXPERIMENTAL_HEADER_LEN + data_len,
    }
}

/// Checks room in `buf`, then lets `write` fill exactly `len` bytes.
fn emit_with(
    buf: &mut [u8],
    len: usize,
    write: impl FnOnce(&mut Writer<'_>),
) -> Result<usize, WireError> {
    let have = buf.len();
    let Some(out) = buf.get_mut(..len) else {
        return Err(WireError::BufferTooSmall { needed: len, have });
    };
    let mut writer = Writer { out, at: 0 };
    write(&mut writer);
    debug_assert_eq!(
        writer.at, len,
        "emit wrote a different length than buffer_len"
    );
    Ok(len)
}

/// Appends big-endian fields to a slice known to be long enough; never
/// panics (a short slice would only truncate, which `emit_with` rules out).
struct Writer<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(slot) = self.out.get_mut(self.at..end) {
            slot.copy_from_slice(bytes);
        }
        self.at = end;
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    /// The low 24 bits of `v`.
    fn u24(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes()[1..]);
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    fn addr(&mut self, a: Ipv4Addr) {
        self.bytes(&a.octets());
    }
}

/// Reads big-endian fields from data whose exact length was checked first.
struct Reader<'b> {
    data: &'b [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.data.split_at_checked(N).unwrap_or((&[], &[]));
        self.data = rest;
        <[u8; N]>::try_from(head).unwrap_or([0; N])
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u24(&mut self) -> u32 {
        let [a, b, c] = self.take::<3>();
        u32::from_be_bytes([0, a, b, c])
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    fn addr(&mut self) -> Ipv4Addr {
        Ipv4Addr::from(self.take::<4>())
    }
}

/// Copies `len` bytes emitted by `emit` into `scratch` and wraps them as an
/// experimental option. Every sustain option fits [`MAX_DATA_LEN`].
fn into_option<'b>(
    exid: u16,
    scratch: &'b mut OptionScratch,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) -> ExperimentalOption<'b> {
    let len = emit(&mut scratch[..]).unwrap_or(0);
    ExperimentalOption {
        exid,
        data: scratch.get(..len).unwrap_or_default(),
    }
}

/// Migrate-Permit (PROTOCOL.md §3.2): the sender's direct (pre-NAPT) IPv4
/// address and port, and in SYN / SYN-ACK its 64-bit key.
///
/// Two forms, told apart by length: full (14 data bytes, with key) in SYN
/// and SYN-ACK; short (6 data bytes, no key) in an MSYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MigratePermit {
    /// The sender's direct (pre-NAPT) IPv4 address.
    pub addr: Ipv4Addr,
    /// The sender's direct (pre-NAPT) port.
    pub port: u16,
    /// The sender's 64-bit key (PROTOCOL.md §4.1); `None` in the short form of an MSYN.
    pub key: Option<u64>,
}

impl MigratePermit {
    /// Data bytes of the short form: address, port.
    pub const SHORT_LEN: usize = 6;
    /// Data bytes of the full form: address, port, key.
    pub const FULL_LEN: usize = 14;

    /// The direct address and port as a socket address.
    pub fn direct(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr, self.port)
    }

    /// Parses the data after the ExID. Any length other than 6 or 14 is
    /// `BadOptionLength`.
    pub fn parse(data: &[u8]) -> Result<MigratePermit, WireError> {
        let full = match data.len() {
            Self::SHORT_LEN => false,
            Self::FULL_LEN => true,
            other => return Err(bad_length(other)),
        };
        let mut r = Reader { data };
        let addr = r.addr();
        let port = r.u16();
        let key = full.then(|| r.u64());
        Ok(MigratePermit { addr, port, key })
    }

    /// Data bytes this permit emits.
    pub fn buffer_len(&self) -> usize {
        if self.key.is_some() {
            Self::FULL_LEN
        } else {
            Self::SHORT_LEN
        }
    }

    /// Writes the data part; `BufferTooSmall` (nothing written) if `buf`
    /// is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        emit_with(buf, self.buffer_len(), |w| {
            w.addr(self.addr);
            w.u16(self.port);
            if let Some(key) = self.key {
                w.u64(key);
            }
        })
    }

    /// The option, with its data stored in `scratch`, for `TcpRepr.experimental`.
    pub fn to_option<'b>(&self, scratch: &'b mut OptionScratch) -> ExperimentalOption<'b> {
        into_option(EXID_MIGRATE_PERMIT, scratch, |buf| self.emit(buf))
    }
}

/// The Migrate option of an MSYN (PROTOCOL.md §3.3): the token of the
/// *receiver's* key, the sender's request number and the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Migrate {
    /// Token of the receiver's key (PROTOCOL.md §4.2).
    pub token: u32,
    /// The sender's request number (PROTOCOL.md §4.5).
    pub request: u32,
    /// MAC under the receiver's key (PROTOCOL.md §4.3).
    pub mac: Mac,
}

impl Migrate {
    /// Data bytes: token, request, MAC.
    pub const LEN: usize = 16;

    fn parse_exact(data: &[u8]) -> Migrate {
        let mut r = Reader { data };
        Migrate {
            token: r.u32(),
            request: r.u32(),
            mac: r.take(),
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.token);
        w.u32(self.request);
        w.bytes(&self.mac);
    }
}

/// The Migrate option of an MSYN-ACK (PROTOCOL.md §3.3): the token of the
/// mover's key, the request number of the MSYN it answers, a fresh nonce
/// the mover must echo (return routability), the responder's received
/// offset (fast resume, §7) and the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MigrateAck {
    /// Token of the mover's key (PROTOCOL.md §4.2).
    pub token: u32,
    /// The request number of the MSYN it answers.
    pub request: u32,
    /// Fresh nonce the mover must echo (PROTOCOL.md §4.4).
    pub nonce: u32,
    /// The responder's RCV.NXT minus the MSYN-ACK's own ACK field (24 bits
    /// on the wire, saturating at [`MAX_ACK_RECEIVED`]); `None` in the
    /// version 0 form without it, which is still accepted.
    pub received: Option<u32>,
    /// MAC under the mover's key (PROTOCOL.md §4.3).
    pub mac: Mac,
}

impl MigrateAck {
    /// Data bytes: token, request, nonce, received (24 bits), MAC.
    pub const LEN: usize = 23;
    /// Data bytes of the version 0 form, without the received offset.
    pub const LEN_V0: usize = 20;

    fn parse_exact(data: &[u8]) -> MigrateAck {
        let with_received = data.len() == Self::LEN;
        let mut r = Reader { data };
        MigrateAck {
            token: r.u32(),
            request: r.u32(),
            nonce: r.u32(),
            received: with_received.then(|| r.u24()),
            mac: r.take(),
        }
    }

    fn buffer_len(&self) -> usize {
        if self.received.is_some() {
            Self::LEN
        } else {
            Self::LEN_V0
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.token);
        w.u32(self.request);
        w.u32(self.nonce);
        if let Some(received) = self.received {
            w.u24(received.min(MAX_ACK_RECEIVED));
        }
        w.bytes(&self.mac);
    }
}

/// The Migrate option of the mover's ACKs after an MSYN-ACK (PROTOCOL.md
/// §3.3): echoes the request number and nonce of the MSYN-ACK, proving the
/// mover receives at the address it claimed, and carries the mover's
/// received offset (fast resume, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MigrateConfirm {
    /// The request number of the MSYN-ACK it confirms.
    pub request: u32,
    /// The nonce of the MSYN-ACK, echoed (PROTOCOL.md §4.4).
    pub nonce: u32,
    /// The mover's RCV.NXT minus this segment's own ACK field; `None` in
    /// the version 0 form without it, which is still accepted.
    pub received: Option<u32>,
}

impl MigrateConfirm {
    /// Data bytes: request, nonce, received.
    pub const LEN: usize = 12;
    /// Data bytes of the version 0 form: request, nonce.
    pub const LEN_V0: usize = 8;

    fn parse_exact(data: &[u8]) -> MigrateConfirm {
        let with_received = data.len() == Self::LEN;
        let mut r = Reader { data };
        MigrateConfirm {
            request: r.u32(),
            nonce: r.u32(),
            received: with_received.then(|| r.u32()),
        }
    }

    fn buffer_len(&self) -> usize {
        if self.received.is_some() {
            Self::LEN
        } else {
            Self::LEN_V0
        }
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.request);
        w.u32(self.nonce);
        if let Some(received) = self.received {
            w.u32(received);
        }
    }
}

/// The three forms of the Migrate option (one ExID), told apart by length:
/// 16 data bytes in an MSYN, 23 (version 0: 20) in an MSYN-ACK, 12
/// (version 0: 8) in the confirming ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrateOption {
    /// In an MSYN.
    Msyn(Migrate),
    /// In an MSYN-ACK.
    MsynAck(MigrateAck),
    /// In the mover's confirming ACK.
    Confirm(MigrateConfirm),
}

impl MigrateOption {
    /// Parses the data after the ExID; any other length is `BadOptionLength`.
    pub fn parse(data: &[u8]) -> Result<MigrateOption, WireError> {
        match data.len() {
            Migrate::LEN => Ok(MigrateOption::Msyn(Migrate::parse_exact(data))),
            MigrateAck::LEN | MigrateAck::LEN_V0 => {
                Ok(MigrateOption::MsynAck(MigrateAck::parse_exact(data)))
            }
            MigrateConfirm::LEN | MigrateConfirm::LEN_V0 => {
                Ok(MigrateOption::Confirm(MigrateConfirm::parse_exact(data)))
            }
            other => Err(bad_length(other)),
        }
    }

    /// Data bytes this form emits.
    pub fn buffer_len(&self) -> usize {
        match self {
            MigrateOption::Msyn(_) => Migrate::LEN,
            MigrateOption::MsynAck(m) => m.buffer_len(),
            MigrateOption::Confirm(m) => m.buffer_len(),
        }
    }

    /// Writes the data part; `BufferTooSmall` (nothing written) if `buf`
    /// is shorter than `buffer_len()`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        emit_with(buf, self.buffer_len(), |w| match self {
            MigrateOption::Msyn(m) => m.write(w),
            MigrateOption::MsynAck(m) => m.write(w),
            MigrateOption::Confirm(m) => m.write(w),
        })
    }

    /// The option, with its data stored in `scratch`, for `TcpRepr.experimental`.
    pub fn to_option<'b>(&self, scratch: &'b mut OptionScratch) -> ExperimentalOption<'b> {
        into_option(EXID_MIGRATE, scratch, |buf| self.emit(buf))
    }
}

impl From<Migrate> for MigrateOption {
    fn from(m: Migrate) -> MigrateOption {
        MigrateOption::Msyn(m)
    }
}

impl From<MigrateAck> for MigrateOption {
    fn from(m: MigrateAck) -> MigrateOption {
        MigrateOption::MsynAck(m)
    }
}

impl From<MigrateConfirm> for MigrateOption {
    fn from(m: MigrateConfirm) -> MigrateOption {
        MigrateOption::Confirm(m)
    }
}

/// Address-Update (PROTOCOL.md §3.4), continuation mode: the address the
/// peer knew the sender by, the token of the receiver's key, the sender's
/// request number and the MAC. The new address is the IP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressUpdate {
    /// The address the peer knew the sender by.
    pub old_addr: Ipv4Addr,
    /// Token of the receiver's key (PROTOCOL.md §4.2).
    pub token: u32,
    /// The sender's request number (PROTOCOL.md §4.5).
    pub request: u32,
    /// MAC under the receiver's key (PROTOCOL.md §4.3).
    pub mac: Mac,
}

impl AddressUpdate {
    /// Data bytes: old address, token, request, MAC.
    pub const LEN: usize = 20;

    /// Parses the data after the ExID; any length but 20 is `BadOptionLength`.
    pub fn parse(data: &[u8]) -> Result<AddressUpdate, WireError> {
        if data.len() != Self::LEN {
            return Err(bad_length(data.len()));
        }
        let mut r = Reader { data };
        Ok(AddressUpdate {
            old_addr: r.addr(),
            token: r.u32(),
            request: r.u32(),
            mac: r.take(),
        })
    }

    /// Data bytes after the ExID: always [`Self::LEN`].
    pub fn buffer_len(&self) -> usize {
        Self::LEN
    }

    /// Writes the data part; `BufferTooSmall` (nothing written) if `buf`
    /// is shorter than 20 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        emit_with(buf, Self::LEN, |w| {
            w.addr(self.old_addr);
            w.u32(self.token);
            w.u32(self.request);
            w.bytes(&self.mac);
        })
    }

    /// The option, with its data stored in `scratch`, for `TcpRepr.experimental`.
    pub fn to_option<'b>(&self, scratch: &'b mut OptionScratch) -> ExperimentalOption<'b> {
        into_option(EXID_ADDRESS_UPDATE, scratch, |buf| self.emit(buf))
    }
}

/// Relay-Ticket in an MSYN to the proxy (PROTOCOL.md §3.5): the ticket id
/// the mobility server gave this end, the sender's request number and the
/// MAC under the ticket's key. Replaces Migrate in that MSYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayMsyn {
    /// The ticket id the mobility server gave this end (PROTOCOL.md §4.7).
    pub ticket: u32,
    /// The sender's request number (PROTOCOL.md §4.5).
    pub request: u32,
    /// MAC under the ticket's key.
    pub mac: Mac,
}

/// Relay-Ticket in the proxy's MSYN-ACK (PROTOCOL.md §3.5): the ticket id,
/// the request number answered, the proxy's nonce, the received offset
/// (24 bits, as in Migrate's MSYN-ACK form) and the MAC under the ticket's
/// key, which proves the proxy knows the ticket secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RelayMsynAck {
    /// The ticket id of the MSYN it answers.
    pub ticket: u32,
    /// The request number of the MSYN it answers.
    pub request: u32,
    /// The proxy's fresh nonce, to be echoed (PROTOCOL.md §4.4).
    pub nonce: u32,
    /// The proxy's received offset, as in [`MigrateAck::received`].
    pub received: u32,
    /// MAC under the ticket's key.
    pub mac: Mac,
}

/// The two forms of Relay-Ticket, told apart by length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayTicket {
    /// Length 20: in an MSYN to the proxy.
    Msyn(RelayMsyn),
    /// Length 27: in the proxy's MSYN-ACK.
    MsynAck(RelayMsynAck),
}

impl RelayTicket {
    /// Data bytes of the MSYN form: ticket, request, MAC.
    pub const MSYN_LEN: usize = 16;
    /// Data bytes of the MSYN-ACK form: ticket, request, nonce, received
    /// (24 bits), MAC.
    pub const MSYN_ACK_LEN: usize = 23;

    /// Parses the data after the ExID; any length but 16 or 23 is
    /// `BadOptionLength`.
    pub fn parse(data: &[u8]) -> Result<RelayTicket, WireError> {
        let mut r = Reader { data };
        match data.len() {
            Self::MSYN_LEN => Ok(RelayTicket::Msyn(RelayMsyn {
                ticket: r.u32(),
                request: r.u32(),
                mac: r.take(),
            })),
            Self::MSYN_ACK_LEN => Ok(RelayTicket::MsynAck(RelayMsynAck {
                ticket: r.u32(),
                request: r.u32(),
                nonce: r.u32(),
                received: r.u24(),
                mac: r.take(),
            })),
            n => Err(bad_length(n)),
        }
    }

    /// Data bytes after the ExID for this form.
    pub fn buffer_len(&self) -> usize {
        match self {
            RelayTicket::Msyn(_) => Self::MSYN_LEN,
            RelayTicket::MsynAck(_) => Self::MSYN_ACK_LEN,
        }
    }

    /// Writes the data part; `BufferTooSmall` (nothing written) if `buf`
    /// is too short. A received offset above 2^24 - 1 saturates.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        emit_with(buf, self.buffer_len(), |w| match self {
            RelayTicket::Msyn(m) => {
                w.u32(m.ticket);
                w.u32(m.request);
                w.bytes(&m.mac);
            }
            RelayTicket::MsynAck(a) => {
                w.u32(a.ticket);
                w.u32(a.request);
                w.u32(a.nonce);
                w.u24(a.received.min(MAX_ACK_RECEIVED));
                w.bytes(&a.mac);
            }
        })
    }

    /// The option, with its data stored in `scratch`, for `TcpRepr.experimental`
    /// or [`MigrationOptions::relay_ticket`].
    pub fn to_option<'b>(&self, scratch: &'b mut OptionScratch) -> ExperimentalOption<'b> {
        into_option(EXID_RELAY_TICKET, scratch, |buf| self.emit(buf))
    }
}

/// Storage for the options [`MigrationOptions::attach`] puts into a segment.
#[derive(Debug, Clone, Default)]
pub struct MigrationScratch {
    migrate: OptionScratch,
    permit: OptionScratch,
    address_update: OptionScratch,
}

/// sustain's options found in (or destined for) one segment.
///
/// At most one of each ExID may appear; options of other ExIDs are left for
/// whoever understands them (RFC 6994 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationOptions<'a> {
    /// Migrate-Permit, in SYN, SYN-ACK and MSYN.
    pub permit: Option<MigratePermit>,
    /// Migrate, in MSYN, MSYN-ACK and the confirming ACK.
    pub migrate: Option<MigrateOption>,
    /// Address-Update, in continuation mode.
    pub address_update: Option<AddressUpdate>,
    /// Data of a Relay-Ticket option (16 or 23 bytes, checked when parsed;
    /// [`relay`](Self::relay) reads it). Senders fill it from
    /// [`RelayTicket::to_option`].
    pub relay_ticket: Option<&'a [u8]>,
}

impl<'a> MigrationOptions<'a> {
    /// Finds and parses sustain's options in a parsed segment.
    ///
    /// Errors (PROTOCOL.md §3.6 says what the TCP layer does with them): one
    /// of our ExIDs with a length none of its forms has is
    /// `BadOptionLength` (kind 253, the option's length); the same ExID twice
    /// is `TooManyOptions`.
    pub fn from_repr(repr: &TcpRepr<'a>) -> Result<MigrationOptions<'a>, WireError> {
        Self::from_options(repr.experimental_options())
    }

    /// Like [`from_repr`](Self::from_repr), over any experimental options.
    pub fn from_options(
        options: impl IntoIterator<Item = ExperimentalOption<'a>>,
    ) -> Result<MigrationOptions<'a>, WireError> {
        fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), WireError> {
            if slot.is_some() {
                return Err(WireError::TooManyOptions);
            }
            *slot = Some(value);
            Ok(())
        }
        let mut found = MigrationOptions::default();
        for option in options {
            match option.exid {
                EXID_MIGRATE_PERMIT => {
                    set_once(&mut found.permit, MigratePermit::parse(option.data)?)?;
                }
                EXID_MIGRATE => set_once(&mut found.migrate, MigrateOption::parse(option.data)?)?,
                EXID_ADDRESS_UPDATE => set_once(
                    &mut found.address_update,
                    AddressUpdate::parse(option.data)?,
                )?,
                EXID_RELAY_TICKET => {
                    RelayTicket::parse(option.data)?;
                    set_once(&mut found.relay_ticket, option.data)?;
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// The Relay-Ticket, parsed (its length was checked by `from_options`).
    pub fn relay(&self) -> Option<RelayTicket> {
        RelayTicket::parse(self.relay_ticket?).ok()
    }

    /// True when the segment carried none of sustain's options.
    pub fn is_empty(&self) -> bool {
        *self == MigrationOptions::default()
    }

    /// Puts these options into the free (`None`) entries of
    /// `repr.experimental`, in the order Migrate, Migrate-Permit,
    /// Address-Update, Relay-Ticket (the order PROTOCOL.md's budgets count).
    /// Their data lives in `scratch`. `TooManyOptions` (and `repr` left
    /// unchanged) if there are not enough free entries. Whether the result
    /// fits 40 bytes is `TcpRepr::emit`'s check.
    pub fn attach<'b>(
        &self,
        scratch: &'b mut MigrationScratch,
        repr: &mut TcpRepr<'b>,
    ) -> Result<(), WireError>
    where
        'a: 'b,
    {
        let MigrationScratch {
            migrate,
            permit,
            address_update,
        } = scratch;
        let wanted = [
            self.migrate.map(|m| m.to_option(migrate)),
            self.permit.map(|p| p.to_option(permit)),
            self.address_update.map(|a| a.to_option(address_update)),
            self.relay_ticket.map(|data| ExperimentalOption {
                exid: EXID_RELAY_TICKET,
                data,
            }),
        ];
        let needed = wanted.iter().flatten().count();
        let free = repr
            .experimental
            .iter()
            .filter(|slot| slot.is_none())
            .count();
        if needed > free {
            return Err(WireError::TooManyOptions);
        }
        let mut free_slots = repr.experimental.iter_mut().filter(|slot| slot.is_none());
        for option in wanted.into_iter().flatten() {
            if let Some(slot) = free_slots.next() {
                *slot = Some(option);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7];

    fn emitted(emit: impl FnOnce(&mut [u8]) -> Result<usize, WireError>) -> Vec<u8> {
        let mut buf = [0xeeu8; 32];
        let n = emit(&mut buf).expect("emit");
        assert!(buf[n..].iter().all(|&b| b == 0xee), "wrote past its length");
        buf[..n].to_vec()
    }

    #[test]
    fn permit_full_and_short_byte_exact() {
        let full = MigratePermit {
            addr: Ipv4Addr::new(192, 0, 2, 10),
            port: 51234,
            key: Some(0x0123_4567_89ab_cdef),
        };
        let wire = [
            192, 0, 2, 10, 0xc8, 0x22, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
        ];
        assert_eq!(emitted(|b| full.emit(b)), wire);
        assert_eq!(full.buffer_len(), 14);
        assert_eq!(MigratePermit::parse(&wire), Ok(full));

        let short = MigratePermit { key: None, ..full };
        assert_eq!(emitted(|b| short.emit(b)), wire[..6]);
        assert_eq!(short.buffer_len(), 6);
        assert_eq!(MigratePermit::parse(&wire[..6]), Ok(short));
        assert_eq!(
            short.direct(),
            SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 10), 51234)
        );
    }

    #[test]
    fn permit_other_lengths_are_bad() {
        for len in [0usize, 1, 5, 7, 13, 15, 20, 36] {
            let data = vec![0u8; len];
            assert_eq!(
                MigratePermit::parse(&data),
                Err(WireError::BadOptionLength {
                    kind: 253,
                    len: 4 + len
                }),
                "data length {len}"
            );
        }
    }

    #[test]
    fn migrate_forms_byte_exact() {
        let msyn = MigrateOption::Msyn(Migrate {
            token: 0x1122_3344,
            request: 7,
            mac: MAC,
        });
        let msyn_wire = [
            0x11, 0x22, 0x33, 0x44, 0, 0, 0, 7, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        ];
        assert_eq!(emitted(|b| msyn.emit(b)), msyn_wire);
        assert_eq!(MigrateOption::parse(&msyn_wire), Ok(msyn));

        let ack = MigrateOption::MsynAck(MigrateAck {
            token: 0x5566_7788,
            request: 0xffff_fffe,
            nonce: 0xdead_beef,
            received: Some(0x01_0203),
            mac: MAC,
        });
        let ack_wire = [
            0x55, 0x66, 0x77, 0x88, 0xff, 0xff, 0xff, 0xfe, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02,
            0x03, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        ];
        assert_eq!(emitted(|b| ack.emit(b)), ack_wire);
        assert_eq!(MigrateOption::parse(&ack_wire), Ok(ack));

        // Version 0 MSYN-ACK: no received offset.
        let ack_v0 = MigrateOption::MsynAck(MigrateAck {
            token: 0x5566_7788,
            request: 0xffff_fffe,
            nonce: 0xdead_beef,
            received: None,
            mac: MAC,
        });
        let ack_v0_wire = [
            0x55, 0x66, 0x77, 0x88, 0xff, 0xff, 0xff, 0xfe, 0xde, 0xad, 0xbe, 0xef, 0xa0, 0xa1,
            0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        ];
        assert_eq!(emitted(|b| ack_v0.emit(b)), ack_v0_wire);
        assert_eq!(MigrateOption::parse(&ack_v0_wire), Ok(ack_v0));

        // The 24-bit offset saturates.
        let big = MigrateOption::MsynAck(MigrateAck {
            received: Some(0x0100_0000),
            ..match ack {
                MigrateOption::MsynAck(a) => a,
                _ => unreachable!(),
            }
        });
        assert_eq!(emitted(|b| big.emit(b))[12..15], [0xff, 0xff, 0xff]);

        let confirm = MigrateOption::Confirm(MigrateConfirm {
            request: 0x0102_0304,
            nonce: 0x0a0b_0c0d,
            received: Some(0x8000_0001),
        });
        let confirm_wire = [1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d, 0x80, 0, 0, 1];
        assert_eq!(emitted(|b| confirm.emit(b)), confirm_wire);
        assert_eq!(MigrateOption::parse(&confirm_wire), Ok(confirm));

        let confirm_v0 = MigrateOption::Confirm(MigrateConfirm {
            request: 0x0102_0304,
            nonce: 0x0a0b_0c0d,
            received: None,
        });
        assert_eq!(emitted(|b| confirm_v0.emit(b)), confirm_wire[..8]);
        assert_eq!(MigrateOption::parse(&confirm_wire[..8]), Ok(confirm_v0));

        for len in [0usize, 4, 13, 15, 17, 19, 21, 22, 24, 36] {
            assert_eq!(
                MigrateOption::parse(&vec![0; len]),
                Err(WireError::BadOptionLength {
                    kind: 253,
                    len: 4 + len
                })
            );
        }
    }

    #[test]
    fn address_update_byte_exact() {
        let au = AddressUpdate {
            old_addr: Ipv4Addr::new(198, 51, 100, 7),
            token: 0xcafe_f00d,
            request: 2,
            mac: MAC,
        };
        let wire = [
            198, 51, 100, 7, 0xca, 0xfe, 0xf0, 0x0d, 0, 0, 0, 2, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4,
            0xa5, 0xa6, 0xa7,
        ];
        assert_eq!(emitted(|b| au.emit(b)), wire);
        assert_eq!(AddressUpdate::parse(&wire), Ok(au));
        assert_eq!(
            AddressUpdate::parse(&wire[..19]),
            Err(WireError::BadOptionLength { kind: 253, len: 23 })
        );
    }

    #[test]
    fn emit_into_short_buffer_writes_nothing() {
        let au = AddressUpdate {
            old_addr: Ipv4Addr::new(1, 2, 3, 4),
            token: 1,
            request: 1,
            mac: MAC,
        };
        let mut small = [0x55u8; 19];
        assert_eq!(
            au.emit(&mut small),
            Err(WireError::BufferTooSmall {
                needed: 20,
                have: 19
            })
        );
        assert!(small.iter().all(|&b| b == 0x55));
        let permit = MigratePermit {
            addr: Ipv4Addr::new(1, 2, 3, 4),
            port: 1,
            key: Some(1),
        };
        assert_eq!(
            permit.emit(&mut small[..13]),
            Err(WireError::BufferTooSmall {
                needed: 14,
                have: 13
            })
        );
    }

    #[test]
    fn from_options_finds_ours_and_skips_others() {
        let permit = [192, 0, 2, 10, 0xc8, 0x22];
        let migrate = [0u8; 16];
        let options = [
            ExperimentalOption {
                exid: 0xf989, // TCP Fast Open's ExID: not ours, ignored
                data: &[1, 2, 3, 4],
            },
            ExperimentalOption {
                exid: EXID_MIGRATE,
                data: &migrate,
            },
            ExperimentalOption {
                exid: EXID_MIGRATE_PERMIT,
                data: &permit,
            },
            ExperimentalOption {
                exid: EXID_RELAY_TICKET,
                data: &[9; 16],
            },
        ];
        let found = MigrationOptions::from_options(options).unwrap();
        assert_eq!(
            found.permit,
            Some(MigratePermit {
                addr: Ipv4Addr::new(192, 0, 2, 10),
                port: 51234,
                key: None
            })
        );
        assert!(matches!(found.migrate, Some(MigrateOption::Msyn(_))));
        assert_eq!(found.address_update, None);
        assert_eq!(found.relay_ticket, Some(&[9u8; 16][..]));
        assert_eq!(
            found.relay(),
            Some(RelayTicket::Msyn(RelayMsyn {
                ticket: 0x0909_0909,
                request: 0x0909_0909,
                mac: [9; 8]
            }))
        );
        assert!(!found.is_empty());
        assert!(MigrationOptions::from_options([]).unwrap().is_empty());
    }

    #[test]
    fn relay_ticket_forms_byte_exact() {
        let msyn = RelayTicket::Msyn(RelayMsyn {
            ticket: 0xdead_beef,
            request: 1,
            mac: MAC,
        });
        let msyn_wire = [
            0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
        ];
        assert_eq!(emitted(|b| msyn.emit(b)), msyn_wire);
        assert_eq!(RelayTicket::parse(&msyn_wire), Ok(msyn));
        let ack = RelayTicket::MsynAck(RelayMsynAck {
            ticket: 0xdead_beef,
            request: 1,
            nonce: 0x5eed_1234,
            received: 0x0100_0000,
            mac: MAC,
        });
        let ack_wire = emitted(|b| ack.emit(b));
        assert_eq!(ack_wire.len(), 23);
        assert_eq!(ack_wire[12..15], [0xff, 0xff, 0xff], "24 bits, saturated");
        for len in [0usize, 12, 15, 17, 20, 22, 24] {
            assert_eq!(
                RelayTicket::parse(&vec![0; len]),
                Err(WireError::BadOptionLength {
                    kind: 253,
                    len: 4 + len
                })
            );
        }
    }

    #[test]
    fn duplicate_or_malformed_ours_is_an_error() {
        let permit = [192, 0, 2, 10, 0xc8, 0x22];
        let twice = [
            ExperimentalOption {
                exid: EXID_MIGRATE_PERMIT,
                data: &permit,
            },
            ExperimentalOption {
                exid: EXID_MIGRATE_PERMIT,
                data: &permit,
            },
        ];
        assert_eq!(
            MigrationOptions::from_options(twice),
            Err(WireError::TooManyOptions)
        );
        let bad = [ExperimentalOption {
            exid: EXID_ADDRESS_UPDATE,
            data: &permit,
        }];
        assert_eq!(
            MigrationOptions::from_options(bad),
            Err(WireError::BadOptionLength { kind: 253, len: 10 })
        );
    }

    #[test]
    fn attach_fills_free_slots_in_order_or_refuses() {
        let options = MigrationOptions {
            permit: Some(MigratePermit {
                addr: Ipv4Addr::new(10, 0, 0, 2),
                port: 40000,
                key: None,
            }),
            migrate: Some(MigrateOption::Msyn(Migrate {
                token: 1,
                request: 2,
                mac: MAC,
            })),
            ..MigrationOptions::default()
        };
        let foreign = ExperimentalOption {
            exid: 0x1234,
            data: &[7],
        };
        let mut scratch = MigrationScratch::default();
        let mut repr = TcpRepr {
            experimental: [Some(foreign), None, None, None],
            ..TcpRepr::default()
        };
        options.attach(&mut scratch, &mut repr).unwrap();
        let exids: Vec<u16> = repr.experimental_options().map(|e| e.exid).collect();
        assert_eq!(exids, [0x1234, EXID_MIGRATE, EXID_MIGRATE_PERMIT]);
        assert_eq!(MigrationOptions::from_repr(&repr), Ok(options));

        let mut scratch = MigrationScratch::default();
        let mut full = TcpRepr {
            experimental: [Some(foreign), Some(foreign), Some(foreign), None],
            ..TcpRepr::default()
        };
        let before = full.clone();
        assert_eq!(
            options.attach(&mut scratch, &mut full),
            Err(WireError::TooManyOptions)
        );
        assert_eq!(full, before);
    }
}
