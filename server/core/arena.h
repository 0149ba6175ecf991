/* arena: a bump allocator for short-lived objects.
 *
 * Everything allocated from an arena lives until arena_reset() or
 * arena_free(); there is no per-object free. The merge and the store unpack
 * protobuf messages into an arena (arena_pb_allocator()), edit them in
 * place and pack them again, then drop everything at once.
 */
#ifndef SHAHIDI_ARENA_H
#define SHAHIDI_ARENA_H

#include <stddef.h>

struct ProtobufCAllocator;
struct arena;

/* Returns a new arena, or NULL when out of memory. */
struct arena *arena_new(void);
/* Frees everything the arena holds and the arena. NULL is a no-op. */
void arena_free(struct arena *a);
/* Frees every allocation but keeps the first block for reuse. */
void arena_reset(struct arena *a);
/* n bytes aligned for any type, or NULL when out of memory. */
void *arena_alloc(struct arena *a, size_t n);
void *arena_zalloc(struct arena *a, size_t n);
void *arena_memdup(struct arena *a, const void *p, size_t n);
/* Gives back the tail of the arena's latest allocation p, which keeps its
 * first n bytes: for buffers sized to a bound before their content is
 * known. A no-op for any other pointer. */
void arena_shrink(struct arena *a, void *p, size_t n);
/* Bytes handed out since the last reset. */
size_t arena_used(const struct arena *a);
/* A protobuf-c allocator backed by the arena; valid as long as the arena. */
struct ProtobufCAllocator *arena_pb_allocator(struct arena *a);

#endif
