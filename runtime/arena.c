/*
 * arena.c: node_alloc/node_free and the out-of-line half of the frame arena.
 *
 * Owns the page mappings behind every arena block.  The ownership rules,
 * the batched remote-free protocol and why it has no ABA are in arena.h:
 * who writes what (the owner: its free list, blocks, batch list and its
 * own pending batches for others; a freeing worker: only the head frame of
 * its pending batch and the owner's `remote` word, by CAS) and why no frame
 * is lost (each frame moves whole from one place to the next; pending
 * batches are bounded and flushed before a worker parks).  This file adds
 * only the slow paths: carving (once per 1023 frames), opening a remote
 * batch (once per up to 1 + ARENA_BATCH_LIST frames), pushing a batch, and
 * the flush.
 */
#include "arena.h"

#include <numa.h>

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE_BYTES ((size_t)2 << 20)

static size_t page_bytes(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	return pg > 0 ? (size_t)pg : 4096;
}

/* The mapping length node_alloc uses for a request, or 0 if it overflows. */
static size_t mapped_len(size_t bytes)
{
	size_t unit = bytes >= HUGE_BYTES ? HUGE_BYTES : page_bytes();
	if (bytes == 0 || bytes > SIZE_MAX - 2 * HUGE_BYTES)
		return 0;
	return (bytes + unit - 1) & ~(unit - 1);
}

/* Bind only where libnuma has real choices: more than one node with memory,
 * and this one among those the process may allocate on (a node without
 * memory is not, and binding to it would fail). */
/* The node to bind os_node's memory to, or -1 for "don't bind".  A node
 * without memory (CPUs only) borrows from the nearest node that has some,
 * as the kernel's own fallback would, rather than wherever first touch
 * happens to run. */
static int numa_bind_node(int os_node)
{
	if (os_node < 0 || numa_available() < 0 || numa_num_configured_nodes() <= 1)
		return -1;
	int max = numa_max_node();
	if (os_node > max)
		return -1;
	if (numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)os_node))
		return os_node;
	int best = -1, best_dist = 0;
	for (int n = 0; n <= max; n++) {
		if (!numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)n))
			continue;
		int d = numa_distance(os_node, n);
		if (d > 0 && (best < 0 || d < best_dist)) {
			best = n;
			best_dist = d;
		}
	}
	return best;
}

void *node_alloc(size_t bytes, int os_node)
{
	size_t len = mapped_len(bytes);
	if (len == 0)
		return NULL;
	/* Large requests get 2 MiB of slack to align the start, the part
	 * before and after is unmapped again. */
	size_t slack = len >= HUGE_BYTES ? HUGE_BYTES : 0;
	size_t map_len = len + slack;
	char *p;
	int bind = numa_bind_node(os_node);
	if (bind >= 0) {
		/* mmap plus an mbind of the whole range; pages are placed on
		 * first touch, so unmapping the slack below is safe. */
		p = numa_alloc_onnode(map_len, bind);
	} else {
		p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			p = NULL;
	}
	if (!p)
		return NULL;
	if (slack) {
		char *start = (char *)(((uintptr_t)p + HUGE_BYTES - 1) & ~(uintptr_t)(HUGE_BYTES - 1));
		if (start > p)
			munmap(p, (size_t)(start - p));
		size_t after = (size_t)(p + map_len - (start + len));
		if (after)
			munmap(start + len, after);
		p = start;
	}
	/* Before any page is touched, so none is ever a huge page.  It fails
	 * only where the kernel has no THP at all, which is what we want. */
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

void node_free(void *p, size_t bytes)
{
	size_t len = mapped_len(bytes);
	if (p && len)
		munmap(p, len);
}

static int arena_grow(struct weft_arena *a)
{
	struct weft_task *blk = node_alloc(ARENA_BLOCK_BYTES, a->os_node);
	if (!blk)
		return -ENOMEM;
	blk->next = a->blocks;
	a->blocks = blk;
	a->nblocks++;
	a->bump = blk + 1;
	a->bump_end = blk + 1 + ARENA_BLOCK_FRAMES;
	return 0;
}

int arena_init(struct weft_arena *a, uint16_t id, int os_node)
{
	memset(a, 0, sizeof(*a));
	a->id = id;
	a->os_node = os_node;
	/* The first block now: a worker that starts is known to have one. */
	return arena_grow(a);
}

void arena_fini(struct weft_arena *a)
{
	struct weft_task *blk = a->blocks;
	while (blk) {
		struct weft_task *older = blk->next;
		node_free(blk, ARENA_BLOCK_BYTES);
		blk = older;
	}
	memset(a, 0, sizeof(*a));
}

/* Push a batch (head listing n frames) onto owner's remote stack. */
static void batch_push(struct weft_arena *owner, struct weft_task *head, uint32_t n)
{
	head->flags = n;
	struct weft_task *old = load_relaxed(&owner->remote);
	do {
		head->next = old;
		/* Release: pairs with the owner's exchange_acq_rel in
		 * arena_alloc_slow, so our writes to the head (the list, the
		 * count, next) and everything earlier users of the batch's
		 * frames did are visible before the owner reuses them; later
		 * pushes are RMWs, so they extend this release to whichever
		 * head the owner takes.  A failed CAS reloads old. */
	} while (!cas_release(&owner->remote, &old, head));
}

void arena_free_remote(struct weft_arena *self, struct weft_arena *owner, struct weft_task *t)
{
	if (!self) {
		/* Not a worker: nowhere to keep a batch, so a batch of one. */
		batch_push(owner, t, 0);
		return;
	}
	unsigned i = t->arena & (ARENA_PEND_SLOTS - 1);
	struct arena_pend *p = &self->pend[i];
	if (p->owner == owner) {
		/* The last frame the head can list: the batch is full. */
		*batch_slot(p->head, p->n) = t;
		batch_push(owner, p->head, p->n + 1);
		p->owner = NULL;
		self->pend_used &= (uint16_t)~(1u << i);
		return;
	}
	/* Another owner's batch in our slot: send it as it is. */
	if (p->owner)
		batch_push(p->owner, p->head, p->n);
	p->owner = owner;
	p->head = t;
	p->n = 0;
	self->pend_used |= (uint16_t)(1u << i);
}

void arena_flush_slow(struct weft_arena *self)
{
	for (unsigned i = 0; i < ARENA_PEND_SLOTS; i++) {
		struct arena_pend *p = &self->pend[i];
		if (p->owner) {
			batch_push(p->owner, p->head, p->n);
			p->owner = NULL;
		}
	}
	self->pend_used = 0;
}

/* Start fetching, for writing, what opening batch head b will touch: its
 * listed frames and the head after it.  Reads b, so b itself should have
 * been prefetched a while ago. */
static void batch_prefetch(struct weft_task *b)
{
	uint32_t n = b->flags;
	for (uint32_t i = 0; i < n; i++)
		prefetch_for_write(*batch_slot(b, i));
	if (b->next)
		prefetch_for_write(b->next);
}

/* Hand out batch head b and put the frames it lists on the free list.  The
 * owner never loads from a listed frame before writing it, and the writes
 * were asked for one batch earlier (batch_prefetch of the next head while
 * opening this one; for the first batch after an exchange, just before),
 * so a spawn does not wait for a line the freer had: the misses overlap
 * instead of each stalling one spawn on its load of t->next. */
static struct weft_task *batch_open(struct weft_arena *a, struct weft_task *b)
{
	struct weft_task *rest = b->next;
	a->batches = rest;
	if (rest)
		batch_prefetch(rest);
	uint32_t n = b->flags;
	struct weft_task *free = a->free;
	for (uint32_t i = 0; i < n; i++) {
		struct weft_task *f = *batch_slot(b, i);
		f->next = free;
		free = f;
	}
	a->free = free;
	return b;
}

struct weft_task *arena_alloc_slow(struct weft_arena *a)
{
	struct weft_task *t = a->batches;
	if (t)
		return batch_open(a, t);
	/* The relaxed look first: an exchange would take the line from the
	 * remote freers even when there is nothing to get. */
	if (load_relaxed(&a->remote)) {
		/* Acquire half pairs with the cas_release in batch_push: the
		 * heads, their lists and the frames are visible. */
		t = exchange_acq_rel(&a->remote, NULL);
		if (t) {
			batch_prefetch(t);
			return batch_open(a, t);
		}
	}
	if (a->bump == a->bump_end && arena_grow(a) < 0)
		return NULL;
	t = a->bump++;
	t->arena = a->id;
	return t;
}
