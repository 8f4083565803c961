/*
 * test_bitset.c: the hierarchical bitset against plain bool arrays.
 *
 * The random test drives five sets with 1M operations (divided by
 * WEFT_TEST_SCALE) and compares every answer with a linear scan of the bool
 * arrays; full iterations, AND and AND-NOT iterations are compared every few
 * thousand steps.  Range clears make whole words and upper-layer regions
 * empty, which is what exercises the skipping and the false leads of the
 * AND iterator.
 */
#include "bitset.h"
#include "testutil.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                          \
	do {                                      \
		if (!(cond))                      \
			cr_assert(0, __VA_ARGS__);   \
	} while (0)

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* splitmix64: deterministic, so a failure replays. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rnd_below(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

/* Reference: first bit >= p of (AND of and_refs) AND NOT (OR of not_refs). */
static int ref_next(bool *const *and_refs, int nand, bool *const *not_refs, int nnot, uint32_t cap, uint32_t p)
{
	for (uint32_t i = p; i < cap; i++) {
		bool in = true;

		for (int k = 0; k < nand && in; k++)
			in = and_refs[k][i];
		for (int k = 0; k < nnot && in; k++)
			in = !not_refs[k][i];
		if (in)
			return (int)i;
	}
	return -1;
}

/* Compare a whole iteration from `start` with the reference. */
static void check_iter(const struct bitset *const *ands, bool *const *and_refs, int nand, const struct bitset *const *nots,
		       bool *const *not_refs, int nnot, uint32_t cap, uint32_t start)
{
	struct bitset_iter it;
	int expect = start < cap ? ref_next(and_refs, nand, not_refs, nnot, cap, start) : -1;

	bitset_iter_init(&it, ands, (uint32_t)nand, nots, (uint32_t)nnot, start);
	for (;;) {
		int got = bitset_iter_next(&it);

		CHECK(got == expect, "iter from %u (and %d, not %d): got %d, expected %d", start, nand, nnot, got, expect);
		if (got < 0)
			break;
		expect = ref_next(and_refs, nand, not_refs, nnot, cap, (uint32_t)got + 1);
	}
	CHECK(bitset_iter_next(&it) == -1, "iterator must stay at its end");
}

static uint32_t expected_layers(uint32_t cap)
{
	uint32_t l = 1, words = (cap + 63) / 64;

	while (words > 1) {
		words = (words + 63) / 64;
		l++;
	}
	return l;
}

Test(bitset, bad_capacity)
{
	struct bitset b;

	cr_assert_eq(bitset_init(&b, 0), -EINVAL);
	cr_assert_eq(bitset_init(&b, BITSET_MAX_BITS + 1), -EINVAL);
}

Test(bitset, edge_capacities)
{
	static const uint32_t caps[] = { 1, 2, 63, 64, 65, 128, 4095, 4096, 4097, 262144, 262145, BITSET_MAX_BITS };
	static const uint32_t layers[] = { 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 4 };

	for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
		uint32_t cap = caps[k], last = cap - 1;
		struct bitset b;
		const struct bitset *one[1] = { &b };
		struct bitset_iter it;

		cr_assert_eq(bitset_init(&b, cap), 0);
		cr_assert_eq(b.nlayers, layers[k], "capacity %u: %u layers", cap, b.nlayers);
		cr_assert_eq(b.nlayers, expected_layers(cap));
		/* Empty set. */
		cr_assert(bitset_empty(&b));
		cr_assert_eq(bitset_first(&b), -1);
		cr_assert_eq(bitset_next(&b, last), -1);
		cr_assert_eq(bitset_next(&b, cap), -1);
		cr_assert_eq(bitset_next_wrap(&b, last), -1);
		bitset_iter_init(&it, one, 1, NULL, 0, 0);
		cr_assert_eq(bitset_iter_next(&it), -1);

		/* The last bit alone, reached from everywhere. */
		cr_assert_not(bitset_set(&b, last));
		cr_assert(bitset_set(&b, last));
		cr_assert(bitset_test(&b, last));
		cr_assert_not(bitset_empty(&b));
		cr_assert_eq(bitset_first(&b), (int)last);
		cr_assert_eq(bitset_next(&b, last), (int)last);
		cr_assert_eq(bitset_next(&b, cap), -1);
		cr_assert_eq(bitset_next_wrap(&b, 0), (int)last);
		bitset_iter_init(&it, one, 1, NULL, 0, last / 2);
		cr_assert_eq(bitset_iter_next(&it), (int)last);
		cr_assert_eq(bitset_iter_next(&it), -1);

		/* First and last: wrap-around finds bit 0 past the end. */
		bitset_set(&b, 0);
		cr_assert_eq(bitset_first(&b), 0);
		cr_assert_eq(bitset_next_wrap(&b, last), (int)last);
		if (cap > 1) {
			cr_assert_eq(bitset_next(&b, 1), (int)last);
			cr_assert_eq(bitset_next_wrap(&b, 1), (int)last);
		}
		cr_assert_eq(bitset_next_wrap(&b, cap), 0);

		if (cap > 1) {
			cr_assert(bitset_clear(&b, last));
			cr_assert_not(bitset_clear(&b, last));
			cr_assert_not(bitset_test(&b, last));
			cr_assert_eq(bitset_next(&b, 1), -1);
			cr_assert_eq(bitset_next_wrap(&b, last), 0);
		}
		cr_assert(bitset_clear(&b, 0));
		cr_assert(bitset_empty(&b), "capacity %u: clearing the last bit must empty every layer", cap);
		for (uint32_t l = 0; l < b.nlayers; l++)
			for (uint32_t w = 0; w < b.nwords[l]; w++)
				cr_assert_eq(b.layer[l][w], 0);
		bitset_destroy(&b);
	}
}

/* Far-apart bits in a 2^24 set: upper layers must lead straight to them. */
Test(bitset, sparse_max_capacity)
{
	struct bitset a, b;
	const struct bitset *ab[2] = { &a, &b };
	const struct bitset *aa[1] = { &a }, *nb[1] = { &b };
	struct bitset_iter it;
	static const uint32_t bits[] = { 5, 4096 * 64 + 3, 9000000, BITSET_MAX_BITS - 1 };

	cr_assert_eq(bitset_init(&a, BITSET_MAX_BITS), 0);
	cr_assert_eq(bitset_init(&b, BITSET_MAX_BITS), 0);
	for (size_t k = 0; k < 4; k++)
		bitset_set(&a, bits[k]);
	/* b shares a's layer-0 words around bits 1 and 3 but not the bits:
	 * the AND descends into those words and finds nothing there. */
	bitset_set(&b, bits[1] + 1);
	bitset_set(&b, bits[3]);
	bitset_set(&b, bits[3] - 1);
	for (size_t k = 0; k < 4; k++) {
		cr_assert_eq(bitset_next(&a, k ? bits[k - 1] + 1 : 0), (int)bits[k]);
		cr_assert_eq(bitset_next_wrap(&a, bits[k] + 1), (int)bits[(k + 1) % 4]);
	}
	bitset_iter_init(&it, ab, 2, NULL, 0, 0);
	cr_assert_eq(bitset_iter_next(&it), (int)bits[3]);
	cr_assert_eq(bitset_iter_next(&it), -1);
	bitset_iter_init(&it, aa, 1, nb, 1, 0);
	cr_assert_eq(bitset_iter_next(&it), (int)bits[0]);
	cr_assert_eq(bitset_iter_next(&it), (int)bits[1]);
	cr_assert_eq(bitset_iter_next(&it), (int)bits[2]);
	cr_assert_eq(bitset_iter_next(&it), -1);
	bitset_iter_init(&it, aa, 1, nb, 1, bits[2] + 1);
	cr_assert_eq(bitset_iter_next(&it), -1);
	bitset_destroy(&a);
	bitset_destroy(&b);
}

Test(bitset, copy_bits_into_larger)
{
	struct bitset small, big;

	cr_assert_eq(bitset_init(&small, 100), 0);
	cr_assert_eq(bitset_init(&big, 70000), 0);
	bitset_set(&small, 0);
	bitset_set(&small, 63);
	bitset_set(&small, 99);
	bitset_set(&big, 69999);
	bitset_copy_bits(&big, &small);
	cr_assert_eq(bitset_first(&big), 0);
	cr_assert_eq(bitset_next(&big, 1), 63);
	cr_assert_eq(bitset_next(&big, 64), 99);
	cr_assert_eq(bitset_next(&big, 100), 69999);
	bitset_clear_all(&big);
	cr_assert(bitset_empty(&big));
	cr_assert_eq(bitset_first(&big), -1);
	bitset_destroy(&small);
	bitset_destroy(&big);
}

#define NSETS 5

static void random_run(uint32_t cap, long nops, uint64_t seed)
{
	struct bitset set[NSETS];
	bool *ref[NSETS];
	long full_every = 4096;

	rng_state = seed;
	for (int k = 0; k < NSETS; k++) {
		cr_assert_eq(bitset_init(&set[k], cap), 0);
		ref[k] = calloc(cap, sizeof(bool));
		cr_assert(ref[k]);
	}
	for (long step = 0; step < nops; step++) {
		int k = (int)rnd_below(NSETS);
		uint32_t i = rnd_below(cap), op = rnd_below(100);
		/* Density drifts between sparse and dense phases. */
		bool dense = (step / 50000) & 1;

		if (op < (dense ? 45u : 25u)) {
			bool was = bitset_set(&set[k], i);
			CHECK(was == ref[k][i], "step %ld: set(%u) returned %d", step, i, was);
			ref[k][i] = true;
		} else if (op < 70) {
			bool was = bitset_clear(&set[k], i);
			CHECK(was == ref[k][i], "step %ld: clear(%u) returned %d", step, i, was);
			ref[k][i] = false;
		} else if (op < 72) {
			/* Clear a run of bits: empties whole words and regions. */
			uint32_t len = 64 + rnd_below(cap < 8192 ? cap : 8192);

			for (uint32_t j = i; j < cap && j < i + len; j++) {
				bitset_clear(&set[k], j);
				ref[k][j] = false;
			}
		} else if (op < 80) {
			bool t = bitset_test(&set[k], i);
			CHECK(t == ref[k][i], "step %ld: test(%u)", step, i);
		} else if (op < 88) {
			int got = bitset_next(&set[k], i), exp = ref_next(&ref[k], 1, NULL, 0, cap, i);
			CHECK(got == exp, "step %ld: next(%u) = %d, expected %d", step, i, got, exp);
		} else if (op < 92) {
			int got = bitset_next_wrap(&set[k], i), exp = ref_next(&ref[k], 1, NULL, 0, cap, i);

			if (exp < 0)
				exp = ref_next(&ref[k], 1, NULL, 0, cap, 0);
			CHECK(got == exp, "step %ld: next_wrap(%u) = %d, expected %d", step, i, got, exp);
			CHECK(bitset_empty(&set[k]) == (exp < 0), "step %ld: empty()", step);
			CHECK(bitset_first(&set[k]) == ref_next(&ref[k], 1, NULL, 0, cap, 0), "step %ld: first()", step);
		} else {
			/* First hit of a random AND / AND-NOT combination. */
			const struct bitset *ands[3], *nots[2];
			bool *and_refs[3], *not_refs[2];
			int nand = 1 + (int)rnd_below(3), nnot = (int)rnd_below(3), perm[NSETS];
			struct bitset_iter it;
			int got, exp;

			for (int j = 0; j < NSETS; j++)
				perm[j] = j;
			for (int j = NSETS - 1; j > 0; j--) {
				int r = (int)rnd_below((uint32_t)j + 1), t = perm[j];
				perm[j] = perm[r];
				perm[r] = t;
			}
			for (int j = 0; j < nand; j++) {
				ands[j] = &set[perm[j]];
				and_refs[j] = ref[perm[j]];
			}
			for (int j = 0; j < nnot; j++) {
				nots[j] = &set[perm[nand + j]];
				not_refs[j] = ref[perm[nand + j]];
			}
			bitset_iter_init(&it, ands, (uint32_t)nand, nots, (uint32_t)nnot, i);
			got = bitset_iter_next(&it);
			exp = ref_next(and_refs, nand, not_refs, nnot, cap, i);
			CHECK(got == exp, "step %ld: iter(and %d, not %d) from %u = %d, expected %d", step, nand, nnot, i, got,
			      exp);
			if (got >= 0 && step % full_every == 17)
				check_iter(ands, and_refs, nand, nots, not_refs, nnot, cap, i);
		}
		if (step % full_every == 0) {
			/* Every single set, every pair as AND, and 0&1&~2&~3. */
			for (int a = 0; a < NSETS; a++) {
				const struct bitset *one[1] = { &set[a] };

				check_iter(one, &ref[a], 1, NULL, NULL, 0, cap, 0);
				for (int b = a + 1; b < NSETS; b++) {
					const struct bitset *two[2] = { &set[a], &set[b] };
					bool *tr[2] = { ref[a], ref[b] };

					check_iter(two, tr, 2, NULL, NULL, 0, cap, 0);
				}
			}
			const struct bitset *ands[2] = { &set[0], &set[1] }, *nots[2] = { &set[2], &set[3] };
			bool *ar[2] = { ref[0], ref[1] }, *nr[2] = { ref[2], ref[3] };
			check_iter(ands, ar, 2, nots, nr, 2, cap, 0);
		}
	}
	for (int k = 0; k < NSETS; k++) {
		bitset_destroy(&set[k]);
		free(ref[k]);
	}
}

/* 3 layers (79, 2, 1 words): most of the 1M operations. */
Test(bitset, random_vs_bool_3_layers, .timeout = 300)
{
	random_run(5000, scaled(800000), 1);
}

/* 4 layers with a partial last word at every layer. */
Test(bitset, random_vs_bool_4_layers, .timeout = 300)
{
	random_run(300001, scaled(150000), 2);
}

/* 1 and 2 layers, where the top word is layer 0 or covers few words. */
Test(bitset, random_vs_bool_small, .timeout = 120)
{
	random_run(64, scaled(25000), 3);
	random_run(65, scaled(25000), 4);
}
