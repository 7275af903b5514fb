//! Stray TCP segments from a raw socket: packets for flows no socket and no
//! conntrack entry knows, e.g. RSTs that a `ct state invalid drop` rule drops.

use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub const RST: u8 = 0x04;

/// Sends one TCP segment with `flags` from `src` to `dst` over a raw IPv4
/// socket (the kernel writes the IP header). Must run inside the sending
/// namespace (see [`crate::inns::in_netns`]).
pub fn send_segment(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, flags: u8) {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).expect("raw TCP socket");
    let segment = segment(src, dst, seq, flags);
    let to = SockAddr::from(SocketAddrV4::new(*dst.ip(), 0));
    let sent = sock.send_to(&segment, &to).unwrap_or_else(|e| panic!("sendto {dst}: {e}"));
    assert_eq!(sent, segment.len());
}

/// A 20-byte TCP header with a valid checksum over the IPv4 pseudo-header.
pub fn segment(src: SocketAddrV4, dst: SocketAddrV4, seq: u32, flags: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0..2].copy_from_slice(&src.port().to_be_bytes());
    h[2..4].copy_from_slice(&dst.port().to_be_bytes());
    h[4..8].copy_from_slice(&seq.to_be_bytes());
    h[12] = 5 << 4; // data offset: 5 words
    h[13] = flags;
    h[14..16].copy_from_slice(&0u16.to_be_bytes()); // window 0 (an RST needs none)
    let sum = checksum(src.ip(), dst.ip(), &h);
    h[16..18].copy_from_slice(&sum.to_be_bytes());
    h
}

fn checksum(src: &Ipv4Addr, dst: &Ipv4Addr, tcp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for pair in b.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            sum += hi | pair.get(1).copied().map_or(0, u32::from);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    add(&(tcp.len() as u16).to_be_bytes());
    add(tcp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_verifies_to_zero() {
        let src = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000);
        let dst = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 80);
        let seg = segment(src, dst, 12345, RST);
        // Summing again with the checksum in place gives 0 after complement.
        assert_eq!(checksum(src.ip(), dst.ip(), &seg), 0);
        assert_eq!(seg[13], RST);
        assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 80);
    }
}
