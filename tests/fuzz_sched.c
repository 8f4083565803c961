/*
 * fuzz_sched.c: libFuzzer target for the scheduler core.  Decodes bytes
 * into the operations of the model test (acquire, try, release, cancel,
 * refused calls) and checks the scheduler against the reference model of
 * sched_model.h after every operation.
 *
 * Build: clang -fsanitize=fuzzer,address,undefined -Iruntime -Iinclude
 *        tests/fuzz_sched.c runtime/sched_core.c runtime/bitset.c
 *
 * Input: byte 0 picks the component count (1-8, or 64), byte 1 the budget
 * (0-7) and strict order (bit 7); then one byte per operation, followed by
 * the bytes that operation reads.  When the input runs out, bytes come
 * from a PRNG seeded with a hash of the input, up to MAX_OPS operations:
 * every input is also a random walk, which finds the deep interleavings
 * (a reservation that changes what blocks an older request) that short
 * byte strings rarely spell out.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define MODEL_FAIL(...)                       \
	do {                                  \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr);          \
		abort();                      \
	} while (0)
#include "sched_model.h"

#define MAX_OPS 1024
#define MAX_LIVE 48

struct input {
	const uint8_t *p;
	size_t n, pos;
	uint64_t rng;
};

static uint8_t next_byte(struct input *in)
{
	uint64_t z;

	if (in->pos < in->n)
		return in->p[in->pos++];
	z = (in->rng += 0x9e3779b97f4a7c15ull); /* splitmix64 */
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return (uint8_t)(z ^ (z >> 31));
}

/* Deps from bytes: bits 0-5 pick the component, bit 7 the access. */
static size_t read_deps(struct input *in, uint32_t ncomp, struct weft_dep *deps, bool wide)
{
	size_t n = next_byte(in) % (wide ? WEFT_MAX_DEPS + 2 : 6);

	for (size_t i = 0; i < n; i++) {
		uint8_t b = next_byte(in);

		/* Out of range only when bit 6 asks for it, so that most
		 * requests are valid. */
		deps[i].comp = (b & 0x3f) % (ncomp + 1);
		if (deps[i].comp == ncomp && !(b & 0x40))
			deps[i].comp = 0;
		deps[i].access = b & 0x80 ? WEFT_WRITE : WEFT_READ;
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size, 0, 0xcbf29ce484222325ull };
	struct weft_dep deps[WEFT_MAX_DEPS + 2];
	struct driver d;
	uint32_t ncomp, budget;
	bool strict;
	uint8_t b;

	if (size < 2)
		return 0;
	for (size_t i = 0; i < size; i++) /* FNV-1a */
		in.rng = (in.rng ^ data[i]) * 0x100000001b3ull;
	b = next_byte(&in);
	ncomp = b == 0xff ? 64 : 1 + b % 8;
	b = next_byte(&in);
	budget = b & 7;
	strict = b & 0x80;
	driver_init(&d, ncomp, budget, strict);
	for (int op = 0; op < MAX_OPS; op++) {
		uint8_t kind = next_byte(&in) % 8;
		int id;

		if (d.nlive >= MAX_LIVE && kind < 3)
			kind = 3;
		switch (kind) {
		case 0:
		case 1:
			driver_acquire(&d, deps, read_deps(&in, ncomp, deps, false), false);
			break;
		case 2:
			driver_acquire(&d, deps, read_deps(&in, ncomp, deps, false), true);
			break;
		case 3:
		case 4:
			id = driver_pick(&d, SCHED_REQ_GRANTED, next_byte(&in));
			if (id >= 0)
				driver_release(&d, (uint32_t)id);
			break;
		case 5:
			b = next_byte(&in);
			id = driver_pick(&d, SCHED_REQ_WAITING, b >> 1);
			if (id >= 0) {
				driver_cancel(&d, (uint32_t)id, b & 1);
				break;
			}
			/* Nobody waits: ask a kept one again, or free it. */
			id = driver_pick(&d, SCHED_REQ_IDLE, b >> 2);
			if (id >= 0 && (b & 3) == 3)
				driver_free_idle(&d, (uint32_t)id);
			else if (id >= 0)
				driver_ask(&d, (uint32_t)id, b & 2, false);
			break;
		case 6:
			driver_bad_calls(&d, next_byte(&in));
			break;
		default:
			/* Wide requests, up to past the maximum (-E2BIG). */
			if (d.nlive < MAX_LIVE)
				driver_acquire(&d, deps, read_deps(&in, ncomp, deps, true), next_byte(&in) & 1);
			break;
		}
		driver_check(&d);
	}
	/* Releasing everything must leave nobody waiting. */
	driver_drain(&d);
	if (d.nlive)
		MODEL_FAIL("%u requests left waiting with nothing held", d.nlive);
	driver_fini(&d);
	return 0;
}
