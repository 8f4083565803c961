/*
 * bitset.h: hierarchical bitset (64-ary layers, like Rust's hibitset).
 *
 * Layer 0 holds the bits.  Each higher layer holds one bit per word of the
 * layer below, set exactly when that word is non-zero; the top layer is a
 * single word.  The number of layers follows from the capacity (1 layer up
 * to 64 bits, 4 layers up to BITSET_MAX_BITS = 2^24), which is fixed at
 * init.  Set, clear and test touch at most one word per layer; find-first
 * and find-next descend from the top and cost O(layers).
 *
 * Invariants: bits at or above capacity are never set; for every layer
 * l > 0, bit i of layer l is set iff word i of layer l-1 is non-zero.
 *
 * Not thread-safe: callers serialise (the scheduler core runs under one
 * lock).  Iterators read the sets lazily, one word per layer at a time; a
 * set may change under an iterator, and the iterator then sees, for each
 * word it has already loaded, the value it loaded (see bitset_iter_next).
 */
#ifndef WEFT_BITSET_H
#define WEFT_BITSET_H

#include <stdbool.h>
#include <stdint.h>

#define BITSET_MAX_BITS (1u << 24)
#define BITSET_MAX_LAYERS 4

struct bitset {
	uint64_t *layer[BITSET_MAX_LAYERS]; /* one allocation, layer[0] first */
	uint32_t nwords[BITSET_MAX_LAYERS];
	uint32_t capacity;
	uint32_t nlayers;
};

/* 0, -EINVAL (capacity 0 or above BITSET_MAX_BITS) or -ENOMEM.  All clear. */
int bitset_init(struct bitset *b, uint32_t capacity);
void bitset_destroy(struct bitset *b);
void bitset_clear_all(struct bitset *b);
/* Set in dst every bit set in src; dst->capacity >= src->capacity. */
void bitset_copy_bits(struct bitset *dst, const struct bitset *src);

static inline bool bitset_test(const struct bitset *b, uint32_t i)
{
	return (b->layer[0][i >> 6] >> (i & 63)) & 1;
}

static inline bool bitset_empty(const struct bitset *b)
{
	return b->layer[b->nlayers - 1][0] == 0;
}

/* Set bit i (< capacity); returns whether it was already set.  Climbs only
 * while it finds empty words: a non-empty word is already marked above. */
static inline bool bitset_set(struct bitset *b, uint32_t i)
{
	uint64_t *w = &b->layer[0][i >> 6];
	uint64_t bit = 1ull << (i & 63);
	uint64_t old = *w;

	if (old & bit)
		return true;
	*w = old | bit;
	for (uint32_t l = 1; old == 0 && l < b->nlayers; l++) {
		i >>= 6;
		w = &b->layer[l][i >> 6];
		old = *w;
		*w = old | (1ull << (i & 63));
	}
	return false;
}

/* Clear bit i (< capacity); returns whether it was set.  Climbs only while
 * the word it cleared became empty. */
static inline bool bitset_clear(struct bitset *b, uint32_t i)
{
	uint64_t *w = &b->layer[0][i >> 6];
	uint64_t bit = 1ull << (i & 63);

	if (!(*w & bit))
		return false;
	*w &= ~bit;
	for (uint32_t l = 1; *w == 0 && l < b->nlayers; l++) {
		i >>= 6;
		w = &b->layer[l][i >> 6];
		*w &= ~(1ull << (i & 63));
	}
	return true;
}

/* The first set bit at or after p, or -1.  O(layers). */
int bitset_next(const struct bitset *b, uint32_t p);

static inline int bitset_first(const struct bitset *b)
{
	return bitset_next(b, 0);
}

/* The first set bit at or after p, wrapping around to 0; -1 if the set is
 * empty.  For round-robin picking: pass last pick + 1. */
int bitset_next_wrap(const struct bitset *b, uint32_t p);

/*
 * Iteration over (AND of and_sets) AND NOT (OR of not_sets), in increasing
 * order, without building the result.  All sets have the same capacity and
 * nand >= 1.  The iterator keeps pointers to both arrays: they must outlive
 * it.
 *
 * Upper layers are combined with AND only: the AND of two "word below is
 * non-empty" bits is a superset filter for "the AND of the words below is
 * non-empty", so a region is skipped only when some AND set is empty there.
 * The NOT sets are applied at layer 0 only, because an upper bit of a NOT
 * set says "some bit below is set", not "every bit below is set": clearing
 * a region because it is non-empty in a NOT set would drop the bits of the
 * region that the NOT set does not contain.  A descent can therefore end in
 * an empty layer-0 word; the iterator then climbs back and goes on, so one
 * call costs O(layers) plus one word per such false lead.
 */
struct bitset_iter {
	const struct bitset *const *and_sets;
	const struct bitset *const *not_sets;
	uint32_t nand, nnot, nlayers;
	uint32_t index[BITSET_MAX_LAYERS]; /* word index loaded at each layer */
	uint64_t mask[BITSET_MAX_LAYERS];  /* bits of that word not yet visited */
};

/* Start at bit `start` (bits below it are not visited). */
void bitset_iter_init(struct bitset_iter *it, const struct bitset *const *and_sets, uint32_t nand,
		      const struct bitset *const *not_sets, uint32_t nnot, uint32_t start);

/* The next bit, or -1 at the end.  A layer-0 word is read when the iterator
 * enters it: bits of that word that change afterwards are not seen (a bit
 * cleared after the load may still be returned; a caller that changes the
 * sets while iterating re-checks what it gets). */
int bitset_iter_next(struct bitset_iter *it);

#endif
