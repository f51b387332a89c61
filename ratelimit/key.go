package ratelimit

import "net/netip"

// DefaultIPv6Prefix is how many leading bits of an IPv6 address name one
// client by default: a single host or home network usually holds a whole
// /64, and could otherwise take a fresh budget from each of its 2^64
// addresses.
const DefaultIPv6Prefix = 64

// ClientKey is the key that counts a client address: an IPv4 address (or
// an IPv4-mapped IPv6 one) as itself, an IPv6 address by its network of
// ipv6Bits leading bits, such as 2001:db8:1:2::/64. Anything that is not an
// IP address is its own key.
func ClientKey(ip string, ipv6Bits int) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.WithZone("").Unmap()
	if addr.Is4() || ipv6Bits <= 0 || ipv6Bits >= 128 {
		return addr.String()
	}
	p, err := addr.Prefix(ipv6Bits)
	if err != nil {
		return addr.String()
	}
	return p.String()
}
