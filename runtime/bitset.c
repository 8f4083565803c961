/*
 * bitset.c: the hierarchical bitset of bitset.h: sizing, search and the
 * AND / AND-NOT iterator.
 *
 * Invariants (see bitset.h): bit i of layer l > 0 is set iff word i of
 * layer l-1 is non-zero; the top layer is one word; bits at or above the
 * capacity of each layer stay clear, so searches need no end masks.
 */
#include "bitset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t ctz64(uint64_t w)
{
	return (uint32_t)__builtin_ctzll(w);
}

int bitset_init(struct bitset *b, uint32_t capacity)
{
	uint32_t bits = capacity, total = 0, l = 0;
	uint64_t *words;

	memset(b, 0, sizeof(*b));
	if (capacity == 0 || capacity > BITSET_MAX_BITS)
		return -EINVAL;
	/* Add layers until one word covers the layer below. */
	do {
		b->nwords[l] = (bits + 63) / 64;
		total += b->nwords[l];
		bits = b->nwords[l];
		l++;
	} while (bits > 1);
	b->nlayers = l;
	b->capacity = capacity;

	words = calloc(total, sizeof(*words));
	if (!words)
		return -ENOMEM;
	for (l = 0; l < b->nlayers; l++) {
		b->layer[l] = words;
		words += b->nwords[l];
	}
	return 0;
}

void bitset_destroy(struct bitset *b)
{
	free(b->layer[0]);
	memset(b, 0, sizeof(*b));
}

void bitset_clear_all(struct bitset *b)
{
	uint32_t total = 0;

	for (uint32_t l = 0; l < b->nlayers; l++)
		total += b->nwords[l];
	memset(b->layer[0], 0, total * sizeof(uint64_t));
}

void bitset_copy_bits(struct bitset *dst, const struct bitset *src)
{
	for (int i = bitset_first(src); i >= 0; i = bitset_next(src, (uint32_t)i + 1))
		bitset_set(dst, (uint32_t)i);
}

int bitset_next(const struct bitset *b, uint32_t p)
{
	uint32_t l = 0, pos = p;

	if (p >= b->capacity)
		return -1;
	/*
	 * Climb: look at the rest of the current word of layer l; if it is
	 * empty, the next candidate is the next word, i.e. the next bit of
	 * layer l+1.  Words past the end of a layer are never looked at.
	 */
	for (;;) {
		uint32_t wi = pos >> 6;

		if (wi < b->nwords[l]) {
			uint64_t w = b->layer[l][wi] & (~0ull << (pos & 63));

			if (w) {
				pos = (wi << 6) | ctz64(w);
				break;
			}
		}
		if (++l == b->nlayers)
			return -1;
		pos = wi + 1;
	}
	/* Descend: a set bit above always has a non-empty word below. */
	while (l > 0) {
		l--;
		pos = (pos << 6) | ctz64(b->layer[l][pos]);
	}
	return (int)pos;
}

int bitset_next_wrap(const struct bitset *b, uint32_t p)
{
	int i = bitset_next(b, p);

	if (i < 0 && p > 0)
		i = bitset_next(b, 0);
	return i;
}

static inline uint64_t iter_word(const struct bitset_iter *it, uint32_t l, uint32_t wi)
{
	uint64_t w = it->and_sets[0]->layer[l][wi];

	for (uint32_t k = 1; k < it->nand && w; k++)
		w &= it->and_sets[k]->layer[l][wi];
	/* NOT sets only at layer 0: see bitset.h. */
	if (l == 0)
		for (uint32_t k = 0; k < it->nnot && w; k++)
			w &= ~it->not_sets[k]->layer[0][wi];
	return w;
}

void bitset_iter_init(struct bitset_iter *it, const struct bitset *const *and_sets, uint32_t nand,
		      const struct bitset *const *not_sets, uint32_t nnot, uint32_t start)
{
	const struct bitset *b = and_sets[0];
	uint32_t pos = start;

	memset(it, 0, sizeof(*it));
	it->and_sets = and_sets;
	it->not_sets = not_sets;
	it->nand = nand;
	it->nnot = nnot;
	it->nlayers = b->nlayers;
	if (start >= b->capacity)
		return;
	/*
	 * At each layer, load the word on the path to `start` and keep the
	 * bits at or after it.  Above layer 0 the bit on the path itself is
	 * dropped: the layer below already holds what is left under it.
	 */
	for (uint32_t l = 0; l < it->nlayers; l++) {
		uint32_t wi = pos >> 6, sh = (pos & 63) + (l > 0);

		it->index[l] = wi;
		it->mask[l] = sh >= 64 ? 0 : iter_word(it, l, wi) & (~0ull << sh);
		pos = wi;
	}
}

int bitset_iter_next(struct bitset_iter *it)
{
	uint32_t l = 0;

	for (;;) {
		uint64_t m = it->mask[l];
		uint32_t idx;

		if (!m) {
			/* This word is done: go on with the next candidate word
			 * of the layer above. */
			if (++l == it->nlayers)
				return -1;
			continue;
		}
		it->mask[l] = m & (m - 1);
		idx = (it->index[l] << 6) | ctz64(m);
		if (l == 0)
			return (int)idx;
		/* Enter word idx of the layer below; with several sets it may
		 * turn out empty (a false lead), and the loop climbs back. */
		l--;
		it->index[l] = idx;
		it->mask[l] = iter_word(it, l, idx);
	}
}
