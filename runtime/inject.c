/*
 * inject.c: the injection queue (see inject.h for the interface and order).
 *
 * Overview
 *
 * The ring is Dmitry Vyukov's bounded MPMC queue.  The cell for position
 * pos is, by its sequence number:
 *   seq == pos          free, the producer that claims pos may fill it;
 *   seq == pos + 1      filled, the consumer that claims pos may take it;
 *   seq == pos + cap    taken, free for position pos + cap.
 * Producers claim a position by CAS on `tail`, consumers by CAS on `head`;
 * the CAS makes a position belong to exactly one producer and then exactly
 * one consumer, and the cell's seq (release store, acquire load) carries the
 * item's bytes between them.  Producers never read `head` and consumers
 * never read `tail` on the fast path, so each index stays on its own side's
 * cache line; only the cells travel.
 *
 * A consumer takes a batch by checking that the cells for head .. head+n-1
 * are all filled and then moving head by n with one CAS.  Only a consumer
 * that has claimed a position can change its cell's seq, and claiming it
 * means moving head past it, which makes our CAS fail; so cells seen filled
 * before a successful CAS are still ours to take.  head and tail are 64-bit
 * and never wrap in practice, so the CAS has no ABA.
 *
 * A push that finds the ring full appends to the overflow: a list of
 * malloc'd chunks under ov_lock, counted by `overflow`.  Each overflow item
 * carries a stamp, the ring's tail when it was appended: every ring item at
 * a position below the stamp was claimed before it, every ring item at or
 * above after it.  A consumer whose relaxed load of `overflow` is non-zero
 * stops its ring batch at ov_stamp (the oldest item's stamp), then takes
 * overflow items whose stamp head has reached.  Pushes go to the ring
 * whenever it has room, so the overflow is only used for the excess.
 *
 * Invariants
 *  - tail, and a cell's item between its claim and publication, are written
 *    by producers only; head, and the seq store that frees a cell, by
 *    consumers only.  cells and mask never change after init.
 *  - The chunk list, `overflow` and `ov_stamp` are written only under
 *    ov_lock; whenever the lock is free, `overflow` is the number of listed
 *    items and ov_stamp the stamp of the first.  Stamps never decrease along
 *    the list (each is read from tail under the lock, and tail only grows).
 *  - No item is lost: a push publishes a ring cell or appends under the lock
 *    (or returns -ENOMEM and queues nothing).  A pop that returns fewer
 *    than max ended its last round having either seen `overflow` zero, or
 *    found the list empty under the lock and then scanned the ring with no
 *    stamp limit; so nothing is stranded behind a stale stamp, and what it
 *    misses is ring cells not yet filled (pushes in progress) or overflow
 *    items appended after its look.
 *  - No item is duplicated: each ring position is claimed by exactly one
 *    head CAS, each list slot is removed under the lock.
 *
 * Why one thread sees exact FIFO: with no concurrency the stamps are exact.
 * Ring items below the oldest stamp are older than every overflow item and
 * are taken first; once head reaches that stamp, the overflow items stamped
 * at or below head are older than every ring item left and are taken next.
 */
#include "arena.h"
#include "inject.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* One line each: a consumer polling or freeing one cell does not take the
 * line of the next away from the producer. */
struct inject_cell {
	uint64_t seq;
	struct weft_inject_item item;
} WEFT_ALIGNED;

struct inject_chunk {
	struct inject_chunk *next;
	unsigned first; /* next slot to take */
	unsigned end;   /* next slot to fill */
	uint64_t stamp[INJECT_CHUNK_ITEMS];
	struct weft_inject_item items[INJECT_CHUNK_ITEMS];
};

/* Larger than any position: no limit on the ring batch. */
#define NO_LIMIT UINT64_MAX

int inject_init(struct weft_inject *q, unsigned log2_cells)
{
	return inject_init_on(q, log2_cells, -1);
}

int inject_init_on(struct weft_inject *q, unsigned log2_cells, int os_node)
{
	if (log2_cells < 1 || log2_cells > 28)
		return -EINVAL;
	memset(q, 0, sizeof(*q));
	size_t cap = (size_t)1 << log2_cells;
	size_t bytes = cap * sizeof(struct inject_cell);
	/* aligned_alloc wants a multiple of the alignment (tiny rings). */
	bytes = (bytes + WEFT_CACHELINE - 1) & ~(size_t)(WEFT_CACHELINE - 1);
	/* Node-local pages: the node's workers are the consumers. */
	q->cells = node_alloc(bytes, os_node);
	if (!q->cells)
		return -ENOMEM;
	q->cells_bytes = bytes;
	for (size_t i = 0; i < cap; i++)
		q->cells[i].seq = i;
	q->mask = cap - 1;
	int r = pthread_mutex_init(&q->ov_lock, NULL);
	if (r) {
		node_free(q->cells, q->cells_bytes);
		q->cells = NULL;
		return -r;
	}
	return 0;
}

void inject_fini(struct weft_inject *q)
{
	struct inject_chunk *lists[2] = { q->ov_head, q->ov_spare };
	for (int i = 0; i < 2; i++) {
		struct inject_chunk *c = lists[i];
		while (c) {
			struct inject_chunk *next = c->next;
			free(c);
			c = next;
		}
	}
	pthread_mutex_destroy(&q->ov_lock);
	if (q->cells)
		node_free(q->cells, q->cells_bytes);
	memset(q, 0, sizeof(*q));
}

/* false: the ring is full. */
static bool ring_push(struct weft_inject *q, const struct weft_inject_item *it)
{
	uint64_t pos = load_relaxed(&q->tail);
	for (;;) {
		struct inject_cell *c = &q->cells[pos & q->mask];
		/* Pairs with the store_release in ring_pop that freed the cell:
		 * the last consumer's copy-out is done before we overwrite. */
		uint64_t seq = load_acquire(&c->seq);
		int64_t diff = (int64_t)(seq - pos);
		if (diff == 0) {
			/* seq_cst, not just atomic: pairs with the seq_cst loads
			 * in inject_nonempty_seq_cst (parking protocol). */
			if (cas_seq_cst(&q->tail, &pos, pos + 1)) {
				c->item = *it;
				/* Pairs with the load_acquire in ring_pop. */
				store_release(&c->seq, pos + 1);
				return true;
			}
			/* The failed CAS reloaded pos. */
		} else if (diff < 0) {
			/* The cell still holds the item from one lap ago. */
			return false;
		} else {
			/* Another producer has filled it; catch up. */
			pos = load_relaxed(&q->tail);
		}
	}
}

/* Takes filled cells from head on, at positions below limit. */
static unsigned ring_pop(struct weft_inject *q, struct weft_inject_item *out, unsigned max,
			 uint64_t limit)
{
	uint64_t pos = load_relaxed(&q->head);
	for (;;) {
		unsigned n = 0;
		uint64_t seq = 0;
		while (n < max && pos + n < limit) {
			/* Pairs with the store_release in ring_push: the item's
			 * bytes are visible once seq says filled. */
			seq = load_acquire(&q->cells[(pos + n) & q->mask].seq);
			if (seq != pos + n + 1)
				break;
			n++;
		}
		if (n == 0) {
			if (pos >= limit || (int64_t)(seq - (pos + 1)) < 0)
				return 0; /* blocked by the overflow, or empty */
			/* Taken by another consumer: head has moved on. */
			pos = load_relaxed(&q->head);
			continue;
		}
		/* acq_rel is the weakest CAS wrapper; only atomicity among
		 * consumers is needed here, the items travel through seq. */
		if (cas_acq_rel(&q->head, &pos, pos + n)) {
			for (unsigned i = 0; i < n; i++) {
				struct inject_cell *c = &q->cells[(pos + i) & q->mask];
				out[i] = c->item;
				/* Pairs with the load_acquire in ring_push. */
				store_release(&c->seq, pos + i + q->mask + 1);
			}
			return n;
		}
		/* The failed CAS reloaded pos; rescan from there. */
	}
}

static int overflow_push(struct weft_inject *q, const struct weft_inject_item *it)
{
	int r = 0;
	pthread_mutex_lock(&q->ov_lock);
	struct inject_chunk *t = q->ov_tail;
	if (!t || t->end == INJECT_CHUNK_ITEMS) {
		struct inject_chunk *c = q->ov_spare;
		if (c) {
			q->ov_spare = c->next;
			q->ov_nspare--;
		} else {
			c = malloc(sizeof(*c));
			if (!c) {
				r = -ENOMEM;
				goto out;
			}
		}
		c->next = NULL;
		c->first = 0;
		c->end = 0;
		if (t)
			t->next = c;
		else
			q->ov_head = c;
		q->ov_tail = c;
		t = c;
	}
	uint64_t stamp = load_relaxed(&q->tail);
	t->stamp[t->end] = stamp;
	t->items[t->end++] = *it;
	uint64_t count = load_relaxed(&q->overflow);
	if (count == 0)
		store_relaxed(&q->ov_stamp, stamp);
	/* Pairs with the seq_cst load in inject_nonempty_seq_cst (parking
	 * protocol); the item itself travels under ov_lock. */
	store_seq_cst(&q->overflow, count + 1);
out:
	pthread_mutex_unlock(&q->ov_lock);
	return r;
}

/* Takes the oldest overflow item regardless of its stamp (the caller's ring
 * batch came up short, so the ring cannot go first), then more while their
 * stamps are at or below head.  Returns 0 only if the overflow is empty. */
static unsigned overflow_pop(struct weft_inject *q, struct weft_inject_item *out, unsigned max)
{
	unsigned n = 0;
	pthread_mutex_lock(&q->ov_lock);
	uint64_t head = load_relaxed(&q->head);
	struct inject_chunk *c;
	while (n < max && (c = q->ov_head) != NULL && c->first < c->end) {
		if (n > 0 && c->stamp[c->first] > head)
			break;
		out[n++] = c->items[c->first++];
		if (c->first < c->end)
			continue;
		/* Drained.  A last chunk with room left is rewound rather than
		 * freed, so a list that keeps filling and emptying does not
		 * malloc each time; a full one is unlinked. */
		if (c->end < INJECT_CHUNK_ITEMS) {
			c->first = 0;
			c->end = 0;
			break;
		}
		q->ov_head = c->next;
		if (!q->ov_head)
			q->ov_tail = NULL;
		if (q->ov_nspare < INJECT_SPARE_CHUNKS) {
			c->next = q->ov_spare;
			q->ov_spare = c;
			q->ov_nspare++;
		} else {
			free(c);
		}
	}
	if (n) {
		uint64_t left = load_relaxed(&q->overflow) - n;
		if (left)
			store_relaxed(&q->ov_stamp, q->ov_head->stamp[q->ov_head->first]);
		/* release: shutdown's inject_nonempty_seq_cst, seeing the
		 * overflow empty, also sees what we did before taking it. */
		store_release(&q->overflow, left);
	}
	pthread_mutex_unlock(&q->ov_lock);
	return n;
}

int inject_push(struct weft_inject *q, const struct weft_inject_item *it)
{
	if (likely(ring_push(q, it)))
		return 0;
	return overflow_push(q, it);
}

unsigned inject_pop(struct weft_inject *q, struct weft_inject_item *out, unsigned max)
{
	unsigned n = 0;
	while (n < max) {
		bool ov = unlikely(load_relaxed(&q->overflow) != 0);
		uint64_t limit = ov ? load_relaxed(&q->ov_stamp) : NO_LIMIT;
		n += ring_pop(q, out + n, max - n, limit);
		if (n == max || !ov)
			break;
		/* The ring came up short: empty, or blocked by older overflow
		 * items.  Each round takes at least one item or stops. */
		unsigned got = overflow_pop(q, out + n, max - n);
		if (got == 0) {
			/* Emptied meanwhile: a stale stamp may have stopped
			 * the ring batch early, so look at the ring once more
			 * rather than report it empty. */
			n += ring_pop(q, out + n, max - n, NO_LIMIT);
			break;
		}
		n += got;
	}
	return n;
}

bool inject_maybe_nonempty(const struct weft_inject *q)
{
	/* The cell at head rather than tail: idle workers poll this, and
	 * reading the producers' tail line would make every push miss. */
	uint64_t head = load_relaxed(&q->head);
	return load_relaxed(&q->cells[head & q->mask].seq) == head + 1 ||
	       load_relaxed(&q->overflow) != 0;
}

bool inject_nonempty_seq_cst(const struct weft_inject *q)
{
	/* These loads pair with the seq_cst publication in inject_push (the
	 * tail CAS in ring_push, the `overflow` store in overflow_push)
	 * against the parker's seq_cst RMW; see inject.h.  tail is read before
	 * head, so a head seen at or past it means everything below that tail
	 * has been taken. */
	uint64_t tail = load_seq_cst(&q->tail);
	uint64_t head = load_seq_cst(&q->head);
	if ((int64_t)(tail - head) > 0)
		return true;
	return load_seq_cst(&q->overflow) != 0;
}
