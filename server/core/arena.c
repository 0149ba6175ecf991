#include "arena.h"

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Blocks start small and double up to ARENA_BLOCK: a thousand small
 * batches in flight must not each hold 64 KiB they do not use. */
#define ARENA_FIRST (4 * 1024)
#define ARENA_BLOCK (64 * 1024)
#define ARENA_ALIGN 16

struct block {
	struct block *next;
	size_t size;
	size_t used;
	_Alignas(ARENA_ALIGN) unsigned char data[];
};

struct arena {
	struct block *head; /* current block; older blocks follow */
	void *last;         /* latest allocation, in head */
	size_t used;
	size_t next_block;  /* size of the next block to allocate */
	ProtobufCAllocator pb;
};

static void *pb_alloc(void *data, size_t n)
{
	return arena_alloc(data, n);
}

static void pb_free(void *data, void *p)
{
	(void)data;
	(void)p;
}

struct arena *arena_new(void)
{
	struct arena *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->next_block = ARENA_FIRST;
	a->pb.alloc = pb_alloc;
	a->pb.free = pb_free;
	a->pb.allocator_data = a;
	return a;
}

static struct block *block_new(struct arena *a, size_t n)
{
	size_t size = n > a->next_block ? n : a->next_block;
	if (a->next_block < ARENA_BLOCK)
		a->next_block *= 2;
	struct block *b = malloc(sizeof(*b) + size);
	if (!b)
		return NULL;
	b->next = NULL;
	b->size = size;
	b->used = 0;
	return b;
}

void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (n == 0)
		n = ARENA_ALIGN;
	struct block *b = a->head;
	if (!b || b->size - b->used < n) {
		struct block *nb = block_new(a, n);
		if (!nb)
			return NULL;
		nb->next = b;
		a->head = nb;
		b = nb;
	}
	void *p = b->data + b->used;
	b->used += n;
	a->used += n;
	a->last = p;
	return p;
}

void arena_shrink(struct arena *a, void *p, size_t n)
{
	if (!p || p != a->last)
		return;
	n = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	struct block *b = a->head;
	size_t end = (size_t)((unsigned char *)p - b->data) + n;
	if (end < b->used) {
		a->used -= b->used - end;
		b->used = end;
	}
}

void *arena_zalloc(struct arena *a, size_t n)
{
	void *p = arena_alloc(a, n);
	if (p)
		memset(p, 0, n);
	return p;
}

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
	void *q = arena_alloc(a, n);
	if (q && n)
		memcpy(q, p, n);
	return q;
}

size_t arena_used(const struct arena *a)
{
	return a->used;
}

void arena_reset(struct arena *a)
{
	if (!a || !a->head)
		return;
	/* Keep the largest standard block: the next use most likely fits. */
	struct block *keep = NULL, *b, *next;
	for (b = a->head; b; b = b->next)
		if (b->size <= ARENA_BLOCK && (!keep || b->size > keep->size))
			keep = b;
	for (b = a->head; b; b = next) {
		next = b->next;
		if (b != keep)
			free(b);
	}
	if (keep) {
		keep->next = NULL;
		keep->used = 0;
	}
	a->head = keep;
	a->last = NULL;
	a->used = 0;
}

void arena_free(struct arena *a)
{
	if (!a)
		return;
	struct block *b = a->head;
	while (b) {
		struct block *next = b->next;
		free(b);
		b = next;
	}
	free(a);
}

ProtobufCAllocator *arena_pb_allocator(struct arena *a)
{
	return &a->pb;
}
