/* peer: who is at the other end of a connection, and where the server may
 * listen. The network policy, in one place:
 *   - addresses are kept as 16 bytes, IPv4 mapped into IPv6 (::ffff:a.b.c.d),
 *     so one rate-limit table and one log format serve both;
 *   - X-Forwarded-For is believed only from a proxy on this machine that
 *     the operator said to trust (--trust-proxy), and only its last hop:
 *     the address the proxy itself saw;
 *   - plain HTTP is served beyond loopback only with --allow-plaintext:
 *     tokens and survivors' names must not cross a network in clear.
 */
#ifndef SHAHIDI_PEER_H
#define SHAHIDI_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The address of sa (AF_INET or AF_INET6) into out; whether it is this
 * machine (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
bool peer_address(const struct sockaddr *sa, uint8_t out[16]);

/* The client an X-Forwarded-For value v[0..n) names, into out, when the
 * connection's peer may say so (trust_proxy and from_loopback). 0 when out
 * was set; -EPERM when the peer may not say; -EINVAL when the last hop is
 * not an address (out unchanged either way). */
int peer_forwarded_for(bool trust_proxy, bool from_loopback, const char *v, size_t n,
		       uint8_t out[16]);

/* Parses --listen (HOST:PORT, [V6]:PORT, localhost:PORT) into ret, and
 * applies the plaintext rule: -EINVAL malformed, -EPERM beyond loopback
 * without allow_plaintext. err says why, for people. */
int peer_listen_addr(const char *listen, bool allow_plaintext, struct sockaddr_storage *ret,
		     char *err, size_t errlen);

#endif
