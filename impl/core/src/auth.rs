//! Migration authentication (PROTOCOL.md §4): connection keys, tokens,
//! truncated HMAC-SHA256 and request-number replay protection.
//!
//! Like MPTCP (RFC 8684 §3.1), each end picks a random 64-bit key and sends
//! it in the Migrate-Permit of its SYN or SYN-ACK. A token, the first four
//! bytes of SHA-256 of a key, names the connection to the key's owner, so a
//! Migrate or Address-Update is matched by token, never by addresses, ports
//! or sequence numbers (a NAPT rewrites all three). MACs are keyed with both
//! keys, the sender's first, and cover a purpose label, the token, the
//! request number and the mover's direct (pre-NAPT) address.
//!
//! Sans-IO: randomness is a [`Random`] passed in.

use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::{Digest, Sha256};

use crate::rand::Random;
use crate::wire::migrate::{Mac, MAC_LEN};

/// Tries [`Key::generate_unique`] makes before giving up. With n live
/// connections one try collides with probability n / 2^32, so running out
/// means the token space is (impossibly) full or the `Random` is broken.
pub const KEY_ATTEMPTS: usize = 64;

/// A connection key: 64 random bits chosen by one end, sent in the clear in
/// its SYN or SYN-ACK (PROTOCOL.md §4.1). On the wire and in MAC inputs it
/// is 8 bytes, big-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

impl Key {
    /// A fresh key. Production `Random`s must be cryptographically strong:
    /// anyone who can predict a key can move the connection.
    pub fn generate(rng: &mut dyn Random) -> Key {
        Key(rng.next_u64())
    }

    /// A fresh key whose token no live connection of this endpoint uses
    /// (`token_in_use` says which are taken), so a token names exactly one
    /// connection (PROTOCOL.md §4.2). `None` after [`KEY_ATTEMPTS`] tries.
    pub fn generate_unique(
        rng: &mut dyn Random,
        mut token_in_use: impl FnMut(Token) -> bool,
    ) -> Option<Key> {
        (0..KEY_ATTEMPTS)
            .map(|_| Key::generate(rng))
            .find(|key| !token_in_use(key.token()))
    }

    /// Network byte order, as carried in Migrate-Permit and fed to SHA-256.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The token naming this key in options (PROTOCOL.md §4.2).
    pub fn token(self) -> Token {
        token_of(self)
    }
}

impl fmt::Debug for Key {
    /// Keys are secrets to anyone who missed the handshake: logs show the
    /// token, which is on the wire anyway.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(token {:08x})", self.token().0)
    }
}

/// The name of a connection at the owner of the key it derives from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(pub u32);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:08x})", self.0)
    }
}

/// The first four bytes of SHA-256 over the key's eight big-endian bytes,
/// read big-endian (the MPTCP token rule, RFC 8684 §3.1).
pub fn token_of(key: Key) -> Token {
    let digest = Sha256::digest(key.to_bytes());
    let first = digest.first_chunk::<4>().copied().unwrap_or_default();
    Token(u32::from_be_bytes(first))
}

/// A fresh 32-bit nonce for an MSYN-ACK (PROTOCOL.md §4.4).
pub fn new_nonce(rng: &mut dyn Random) -> u32 {
    rng.next_u32()
}

/// A request number: names one MSYN transmission or one Address-Update
/// move of one sender on one connection. Compared with RFC 1982 serial
/// arithmetic (SERIAL_BITS = 32), so it wraps without ever running out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestNumber(pub u32);

impl RequestNumber {
    /// The first number a sender uses; receivers start from 0 = "none yet".
    pub const FIRST: RequestNumber = RequestNumber(1);

    /// The following number (wrapping from 2^32 - 1 to 0).
    pub fn next(self) -> RequestNumber {
        RequestNumber(self.0.wrapping_add(1))
    }

    /// `self > earlier` in RFC 1982 §3.2 terms: the distance forward from
    /// `earlier` is 1 ..= 2^31 - 1. Exactly 2^31 apart is undefined there
    /// and counts as not after.
    pub fn is_after(self, earlier: RequestNumber) -> bool {
        let distance = self.0.wrapping_sub(earlier.0);
        distance != 0 && distance < 1 << 31
    }
}

/// The sender's side: hands out strictly increasing request numbers.
#[derive(Debug, Clone)]
pub struct RequestCounter {
    last: RequestNumber,
}

impl Default for RequestCounter {
    fn default() -> Self {
        RequestCounter::new()
    }
}

impl RequestCounter {
    /// A counter that has handed out nothing yet (the first number is 1).
    pub fn new() -> RequestCounter {
        RequestCounter {
            last: RequestNumber(0),
        }
    }

    /// The number for the next MSYN transmission or Address-Update move.
    pub fn take(&mut self) -> RequestNumber {
        self.last = self.last.next();
        self.last
    }

    /// The most recently handed-out number (0 before the first).
    pub fn last(&self) -> RequestNumber {
        self.last
    }
}

/// How a received request number relates to the last one accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestCheck {
    /// After the last accepted: a new request; accept once the MAC verifies.
    Fresh,
    /// Equal to the last accepted: a duplicate of the move already made
    /// (PROTOCOL.md §4.5 says when that is answered rather than dropped).
    Repeat,
    /// Before the last accepted (or 2^31 or more ahead): a replay; drop.
    Stale,
}

/// The receiver's side of replay protection: remembers the last request
/// number accepted from the peer on this connection.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    last_accepted: RequestNumber,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl ReplayWindow {
    /// A window that has accepted nothing yet (last accepted: 0).
    pub fn new() -> ReplayWindow {
        ReplayWindow {
            last_accepted: RequestNumber(0),
        }
    }

    /// Whether `request` is fresh, a repeat of the last accepted one, or stale (PROTOCOL.md §4.5).
    pub fn check(&self, request: RequestNumber) -> RequestCheck {
        if request == self.last_accepted {
            RequestCheck::Repeat
        } else if request.is_after(self.last_accepted) {
            RequestCheck::Fresh
        } else {
            RequestCheck::Stale
        }
    }

    /// Records `request` as accepted if it is fresh; call only after its MAC
    /// verified. Returns what [`check`](Self::check) said before.
    pub fn accept(&mut self, request: RequestNumber) -> RequestCheck {
        let verdict = self.check(request);
        if verdict == RequestCheck::Fresh {
            self.last_accepted = request;
        }
        verdict
    }

    /// The last request number accepted.
    pub fn last_accepted(&self) -> RequestNumber {
        self.last_accepted
    }
}

/// Label of the MAC in an MSYN's Migrate option.
pub const LABEL_MSYN: &[u8] = b"sustain MSYN";
/// Label of the MAC in an MSYN-ACK's Migrate option.
pub const LABEL_MSYN_ACK: &[u8] = b"sustain MSYN-ACK";
/// Label of the MAC in an Address-Update option.
pub const LABEL_ADDRESS_UPDATE: &[u8] = b"sustain ADDRESS-UPDATE";

/// What a MAC covers (PROTOCOL.md §4.3). Deliberately absent: the IP source
/// and ports of the segment (a NAPT rewrites them) and every sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacInput {
    /// Migrate in an MSYN: `token` of the receiver's key, the sender's
    /// `request`, and the mover's direct address as in the MSYN's
    /// Migrate-Permit.
    Msyn {
        /// Token of the receiver's key.
        token: Token,
        /// The sender's request number.
        request: RequestNumber,
        /// The mover's direct address and port, from the MSYN's Migrate-Permit.
        mover: SocketAddrV4,
    },
    /// Migrate in an MSYN-ACK: `token` of the mover's key, the `request`
    /// of the MSYN answered, the responder's `nonce`, the mover's direct
    /// address from that MSYN's Migrate-Permit, and the responder's
    /// `received` offset as carried (24 bits; `None` in the version 0
    /// form, whose message ends after the port).
    MsynAck {
        /// Token of the mover's key.
        token: Token,
        /// The request number of the MSYN answered.
        request: RequestNumber,
        /// The responder's nonce.
        nonce: u32,
        /// The mover's direct address and port, from that MSYN's Migrate-Permit.
        mover: SocketAddrV4,
        /// The responder's received offset as carried (24 bits); `None` in the version 0 form.
        received: Option<u32>,
    },
    /// Address-Update: `token` of the receiver's key, the sender's
    /// `request`, and the `old_addr` carried in the option.
    AddressUpdate {
        /// Token of the receiver's key.
        token: Token,
        /// The sender's request number.
        request: RequestNumber,
        /// The address carried in the option.
        old_addr: Ipv4Addr,
    },
}

/// Longest MAC message: "sustain ADDRESS-UPDATE" (22) + 0 + 12 bytes, or
/// "sustain MSYN-ACK" (16) + 0 + 21 bytes.
const MAX_MESSAGE_LEN: usize = 40;

/// The exact bytes a MAC is computed over.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MacMessage {
    bytes: [u8; MAX_MESSAGE_LEN],
    len: usize,
}

impl MacMessage {
    fn push(&mut self, data: &[u8]) {
        let end = self.len + data.len();
        if let Some(slot) = self.bytes.get_mut(self.len..end) {
            slot.copy_from_slice(data);
            self.len = end;
        }
    }

    /// The message bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl fmt::Debug for MacMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl MacInput {
    /// The label that starts the message for this input.
    pub fn label(&self) -> &'static [u8] {
        match self {
            MacInput::Msyn { .. } => LABEL_MSYN,
            MacInput::MsynAck { .. } => LABEL_MSYN_ACK,
            MacInput::AddressUpdate { .. } => LABEL_ADDRESS_UPDATE,
        }
    }

    /// `label || 0x00 || fields`, every field big-endian. The zero byte
    /// makes the labels prefix-free, so no two inputs share a message.
    pub fn message(&self) -> MacMessage {
        let mut m = MacMessage {
            bytes: [0; MAX_MESSAGE_LEN],
            len: 0,
        };
        m.push(self.label());
        m.push(&[0]);
        match *self {
            MacInput::Msyn {
                token,
                request,
                mover,
            } => {
                m.push(&token.0.to_be_bytes());
                m.push(&request.0.to_be_bytes());
                m.push(&mover.ip().octets());
                m.push(&mover.port().to_be_bytes());
            }
            MacInput::MsynAck {
                token,
                request,
                nonce,
                mover,
                received,
            } => {
                m.push(&token.0.to_be_bytes());
                m.push(&request.0.to_be_bytes());
                m.push(&nonce.to_be_bytes());
                m.push(&mover.ip().octets());
                m.push(&mover.port().to_be_bytes());
                if let Some(received) = received {
                    // PROTOCOL.md §4.3: the 24 bits as they are on the wire.
                    let wire = received.min(crate::wire::MAX_ACK_RECEIVED);
                    m.push(&wire.to_be_bytes()[1..]);
                }
            }
            MacInput::AddressUpdate {
                token,
                request,
                old_addr,
            } => {
                m.push(&token.0.to_be_bytes());
                m.push(&request.0.to_be_bytes());
                m.push(&old_addr.octets());
            }
        }
        m
    }
}

/// HMAC-SHA256 keyed with `sender || receiver` (16 bytes). The key is
/// zero-padded to SHA-256's 64-byte block here, which is exactly what HMAC
/// does with a short key (RFC 2104 §2), and makes construction infallible.
fn hmac_for(sender: Key, receiver: Key) -> Hmac<Sha256> {
    let mut key = [0u8; 64];
    let (first, rest) = key.split_at_mut(8);
    first.copy_from_slice(&sender.to_bytes());
    if let Some(second) = rest.get_mut(..8) {
        second.copy_from_slice(&receiver.to_bytes());
    }
    <Hmac<Sha256> as KeyInit>::new(&key.into())
}

/// The truncated MAC the *sender* of an option computes: the leftmost
/// [`MAC_LEN`] bytes of HMAC-SHA256(sender_key || receiver_key, message).
pub fn mac(sender: Key, receiver: Key, input: &MacInput) -> Mac {
    let full = hmac_for(sender, receiver)
        .chain_update(input.message().as_bytes())
        .finalize()
        .into_bytes();
    full.first_chunk::<MAC_LEN>().copied().unwrap_or_default()
}

/// Checks a received truncated MAC in constant time. `sender` is the key of
/// the host that sent the option (the peer, for a receiver).
pub fn verify(sender: Key, receiver: Key, input: &MacInput, mac: &Mac) -> bool {
    hmac_for(sender, receiver)
        .chain_update(input.message().as_bytes())
        .verify_truncated_left(mac)
        .is_ok()
}

/// The MAC of an MSYN's Migrate option, sent by the mover.
pub fn mac_msyn(
    mover_key: Key,
    responder_key: Key,
    request: RequestNumber,
    mover_direct: SocketAddrV4,
) -> Mac {
    let input = MacInput::Msyn {
        token: responder_key.token(),
        request,
        mover: mover_direct,
    };
    mac(mover_key, responder_key, &input)
}

/// The MAC of an MSYN-ACK's Migrate option, sent by the responder.
pub fn mac_msyn_ack(
    responder_key: Key,
    mover_key: Key,
    request: RequestNumber,
    nonce: u32,
    mover_direct: SocketAddrV4,
    received: Option<u32>,
) -> Mac {
    let input = MacInput::MsynAck {
        token: mover_key.token(),
        request,
        nonce,
        mover: mover_direct,
        received,
    };
    mac(responder_key, mover_key, &input)
}

/// The MAC of an Address-Update option, sent by the mover.
pub fn mac_address_update(
    mover_key: Key,
    peer_key: Key,
    request: RequestNumber,
    old_addr: Ipv4Addr,
) -> Mac {
    let input = MacInput::AddressUpdate {
        token: peer_key.token(),
        request,
        old_addr,
    };
    mac(mover_key, peer_key, &input)
}

/// Both keys of a connection, from one end's point of view. Signing and
/// verifying through this type gets the key order right by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionKeys {
    /// This end's key.
    pub local: Key,
    /// The peer's key.
    pub remote: Key,
}

impl ConnectionKeys {
    /// The token the peer puts in options it sends us; our connection table
    /// is indexed by it.
    pub fn local_token(&self) -> Token {
        self.local.token()
    }

    /// The token we put in options we send to the peer.
    pub fn remote_token(&self) -> Token {
        self.remote.token()
    }

    /// MAC for an option we send.
    pub fn sign(&self, input: &MacInput) -> Mac {
        mac(self.local, self.remote, input)
    }

    /// Constant-time check of an option the peer sent us.
    pub fn verify(&self, input: &MacInput, mac: &Mac) -> bool {
        verify(self.remote, self.local, input, mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rand::SplitMix64;

    #[test]
    fn serial_arithmetic_wraps() {
        let r = RequestNumber;
        assert!(r(2).is_after(r(1)));
        assert!(!r(1).is_after(r(2)));
        assert!(!r(5).is_after(r(5)));
        assert!(r(0).is_after(r(u32::MAX)));
        assert!(r(3).is_after(r(u32::MAX - 3)));
        assert!(r((1 << 31) - 1).is_after(r(0)));
        // Exactly 2^31 apart: undefined in RFC 1982, never "after".
        assert!(!r(1 << 31).is_after(r(0)));
        assert!(!r(0).is_after(r(1 << 31)));
        assert_eq!(r(u32::MAX).next(), r(0));
    }

    #[test]
    fn replay_window_accepts_only_fresh() {
        let mut window = ReplayWindow::new();
        assert_eq!(window.check(RequestNumber(0)), RequestCheck::Repeat);
        assert_eq!(window.accept(RequestNumber(1)), RequestCheck::Fresh);
        assert_eq!(window.accept(RequestNumber(1)), RequestCheck::Repeat);
        assert_eq!(window.accept(RequestNumber(5)), RequestCheck::Fresh);
        assert_eq!(window.accept(RequestNumber(4)), RequestCheck::Stale);
        assert_eq!(window.last_accepted(), RequestNumber(5));
        // Far ahead (2^31 or more) is indistinguishable from far behind.
        assert_eq!(
            window.check(RequestNumber(5 + (1 << 31))),
            RequestCheck::Stale
        );
        assert_eq!(window.last_accepted(), RequestNumber(5));
    }

    #[test]
    fn replay_window_survives_wrap() {
        let mut counter = RequestCounter {
            last: RequestNumber(u32::MAX - 2),
        };
        let mut window = ReplayWindow {
            last_accepted: RequestNumber(u32::MAX - 2),
        };
        let mut previous = counter.last();
        for _ in 0..6 {
            let request = counter.take();
            assert_eq!(window.accept(request), RequestCheck::Fresh, "{request:?}");
            assert_eq!(window.check(previous), RequestCheck::Stale);
            previous = request;
        }
        assert_eq!(window.last_accepted(), RequestNumber(3));
    }

    #[test]
    fn counter_starts_at_first() {
        let mut counter = RequestCounter::new();
        assert_eq!(counter.take(), RequestNumber::FIRST);
        assert_eq!(counter.take(), RequestNumber(2));
        assert_eq!(counter.last(), RequestNumber(2));
    }

    #[test]
    fn unique_keys_avoid_taken_tokens() {
        let mut rng = SplitMix64::new(7);
        let mut probe = SplitMix64::new(7);
        let first = Key::generate(&mut probe);
        let second = Key::generate(&mut probe);
        // The first candidate's token is taken, so the second is chosen.
        let key = Key::generate_unique(&mut rng, |t| t == first.token()).unwrap();
        assert_eq!(key, second);
        // Everything taken: give up instead of looping forever.
        assert_eq!(Key::generate_unique(&mut rng, |_| true), None);
    }

    #[test]
    fn key_debug_hides_the_key() {
        let key = Key(0x0123_4567_89ab_cdef);
        let shown = format!("{key:?}");
        assert!(!shown.contains("123456789"), "{shown}");
        assert!(shown.starts_with("Key(token "), "{shown}");
    }

    #[test]
    fn connection_keys_order_is_sender_first() {
        let a = ConnectionKeys {
            local: Key(1),
            remote: Key(2),
        };
        let b = ConnectionKeys {
            local: Key(2),
            remote: Key(1),
        };
        let input = MacInput::Msyn {
            token: b.local_token(),
            request: RequestNumber(9),
            mover: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1000),
        };
        let tag = a.sign(&input);
        assert!(b.verify(&input, &tag));
        // Reflected back to its sender, the same bytes do not verify.
        assert!(!a.verify(&input, &tag));
        assert_eq!(a.remote_token(), b.local_token());
    }
}
