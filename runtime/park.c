/*
 * park.c: putting idle workers to sleep and waking exactly one of them.
 *
 * Overview
 *   A worker with nothing to run first spins (searches for work) for a
 *   while, then parks: it sets its bit in its node's idle mask, counts
 *   itself in node->idle_state, looks for work once more, and sleeps on its
 *   own futex word `park_word` until a waker hands it a token.  The counts
 *   live per node (node->idle_state: parked and spinning workers of that
 *   node) so wakeups stay on the node where the work is.  A waker
 *   claims a parked worker by clearing its bit (fetch_and: exactly one
 *   claimer wins), fixes the counts, and stores PARK_TOKEN; it makes the
 *   futex syscall only if the worker had announced PARK_SLEEPING.
 *
 *   Go's rule, per node, keeps wakeups rare: a spawn wakes a parked worker
 *   only when nobody is spinning already (the woken worker starts out
 *   spinning, so a burst of spawns wakes one worker, not many); a spinner
 *   that finds work and was the last spinner wakes the next one if it
 *   still sees work (worker_work_visible, after its seq_cst decrement).  The
 *   waker looks at the nodes nearest first and stops at the first node
 *   that has a spinner (it will find the work) or a parked worker (wake
 *   it).  At most half the busy workers (at least two) spin at a time.
 *
 * Invariants
 *   - A worker's idle bit is set only by itself and cleared by exactly one
 *     party: itself (it found work before sleeping) or a claimer.  The one
 *     that clears it fixes IDLE_PARKED and nparked_main.
 *   - A claimed worker always receives a token, and it counts as spinning
 *     from the claim on (the claimer added it to IDLE_SPINNING).
 *   - No lost wakeup: a parker's announcement (seq_cst RMWs) precedes its
 *     last look at the queues; a submitter's push precedes its seq_cst load
 *     of idle_state (the push is itself published by a seq_cst RMW).  In the total order of seq_cst
 *     operations one of them comes first, so either the parker sees the
 *     task or the submitter sees the parker.  A submitter that skips the
 *     wake because someone spins relies on that spinner; the spinner stops
 *     spinning with a seq_cst RMW and only then takes its last look, so it
 *     cannot miss the task either.
 *   - Stray tokens (a token that arrives after the worker woke for another
 *     reason) make one later park return at once; they are harmless.
 */
#include "rt.h"

#include "os.h"
#include "ring.h"

static inline uint64_t worker_mask(const struct weft_node *n, const struct weft_worker *w, unsigned *word)
{
	unsigned bit = w->index - n->first;
	*word = bit / 64;
	return 1ull << (bit % 64);
}

/* Hand w a token; w has been claimed (or is awake and only needs a nudge). */
static void deliver_token(struct weft_worker *w)
{
	/* release: pairs with the parker's load_acquire of PARK_TOKEN, so what
	 * the waker did before (the task it pushed, the group it finished) is
	 * visible to the woken worker. */
	uint32_t old = exchange_acq_rel(&w->park_word, PARK_TOKEN);
	/* A worker asleep on its ring's FUTEX_WAIT is woken by the same
	 * FUTEX_WAKE; one asleep on the eventfd read by the eventfd. */
	if (old == PARK_SLEEPING)
		os_futex_wake(&w->park_word, 1);
	else if (old == PARK_SLEEPING_EFD)
		os_eventfd_signal(ring_wake_fd(w));
}

/* Claim one parked worker of node `ni`.  The claimed worker comes back as
 * a spinner; `spinning_added` says whether the caller already counted it. */
static struct weft_worker *claim_on_node(struct weft_rt *rt, unsigned ni, bool spinning_added)
{
	struct weft_node *n = rt->nodes[ni];
	for (unsigned i = 0; i * 64 < n->count; i++) {
		/* seq_cst: park_wake_on_node comes here straight after an
		 * affine push, with no seq_cst load of idle_state before: this
		 * load is its half of the push/park order (see top). */
		uint64_t v = load_seq_cst(&n->idle[i]);
		while (v) {
			uint64_t bit = v & -v;
			/* seq_cst: pairs with the parker's fetch_or_seq_cst; the
			 * winner of the bit owns the wake. */
			uint64_t old = fetch_and_seq_cst(&n->idle[i], ~bit);
			if (old & bit) {
				struct weft_worker *w = rt->workers[n->first + i * 64 + (unsigned)__builtin_ctzll(bit)];
				uint32_t delta = (spinning_added ? 0 : IDLE_SPINNING_ONE) - IDLE_PARKED_ONE;
				/* seq_cst: part of the parker/submitter total order. */
				fetch_add_seq_cst(&n->idle_state, delta);
				/* park_kind was written before the parker's fetch_or,
				 * which our fetch_and read from. */
				if (load_relaxed(&w->park_kind) == PARK_KIND_MAIN)
					fetch_sub_seq_cst(&rt->nparked_main, 1);
				return w;
			}
			v = old & ~bit;
		}
	}
	return NULL;
}

/* Node ni has parked workers and no spinner: count one more spinner there
 * first (so concurrent spawns do not wake a second one), then claim. */
static bool wake_on_node_as_spinner(struct weft_rt *rt, unsigned ni, uint32_t s)
{
	struct weft_node *n = rt->nodes[ni];
	for (;;) {
		if (IDLE_PARKED(s) == 0 || IDLE_SPINNING(s) != 0)
			return IDLE_SPINNING(s) != 0;
		/* seq_cst: part of the parker/submitter total order. */
		if (cas_seq_cst(&n->idle_state, &s, s + IDLE_SPINNING_ONE))
			break;
	}
	struct weft_worker *w = claim_on_node(rt, ni, true);
	if (w) {
		deliver_token(w);
		return true;
	}
	/* Whoever was parked left on its own; take back our count. */
	fetch_sub_seq_cst(&n->idle_state, IDLE_SPINNING_ONE);
	return false;
}

void park_wake_one(struct weft_rt *rt, unsigned node)
{
	const struct weft_topology *t = &rt->topo;
	for (unsigned k = 0; k < rt->nnodes; k++) {
		unsigned ni = k == 0 ? node : t->near[node][k - 1];
		/* seq_cst: pairs with the parker's announcement (see top). */
		uint32_t s = load_seq_cst(&rt->nodes[ni]->idle_state);
		if (IDLE_SPINNING(s) != 0)
			return;
		if (IDLE_PARKED(s) != 0 && wake_on_node_as_spinner(rt, ni, s))
			return;
	}
}

bool park_wake_on_node(struct weft_rt *rt, unsigned node)
{
	struct weft_worker *w = claim_on_node(rt, node, false);
	if (w)
		deliver_token(w);
	return w != NULL;
}

void park_notify(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	struct weft_node *n = rt->nodes[w->node];
	unsigned word;
	uint64_t mask = worker_mask(n, w, &word);
	/* seq_cst: pairs with the parker's fetch_or_seq_cst. */
	uint64_t old = fetch_and_seq_cst(&n->idle[word], ~mask);
	if (old & mask) {
		/* We claimed it: fix the counts as claim_on_node does. */
		fetch_add_seq_cst(&n->idle_state, IDLE_SPINNING_ONE - IDLE_PARKED_ONE);
		if (load_relaxed(&w->park_kind) == PARK_KIND_MAIN)
			fetch_sub_seq_cst(&rt->nparked_main, 1);
	}
	deliver_token(w);
}

void park_wake_all(struct weft_rt *rt)
{
	for (unsigned ni = 0; ni < rt->nnodes; ni++) {
		struct weft_worker *w;
		while ((w = claim_on_node(rt, ni, false)))
			deliver_token(w);
	}
}

void park_spin_begin(struct weft_worker *w)
{
	struct weft_rt *rt = w->rt;
	/* The cap is global: at most half the busy workers spin. */
	unsigned parked = 0, spinning = 0;
	for (unsigned ni = 0; ni < rt->nnodes; ni++) {
		uint32_t s = load_relaxed(&rt->nodes[ni]->idle_state);
		parked += IDLE_PARKED(s);
		spinning += IDLE_SPINNING(s);
	}
	/* Go caps spinners at half the busy processors; a small pool may
	 * still have two, so two workers that run dry together do not take
	 * turns parking and unparking. */
	unsigned busy = rt->nworkers - parked;
	unsigned cap = busy / 2 > 2 ? busy / 2 : 2;
	if (spinning >= cap)
		return;
	/* seq_cst: spinners are part of the submitter/parker order. */
	fetch_add_seq_cst(&rt->nodes[w->node]->idle_state, IDLE_SPINNING_ONE);
	w->spinning = true;
}

void park_spin_end(struct weft_worker *w, bool found_work)
{
	struct weft_rt *rt = w->rt;
	w->spinning = false;
	/* seq_cst: a submitter that saw us spinning skipped its wake; our
	 * later looks at the queues come after this in the total order. */
	uint32_t old = fetch_sub_seq_cst(&rt->nodes[w->node]->idle_state, IDLE_SPINNING_ONE);
	/* The last spinner found work: if more is visible, let another look.
	 * The look comes after our seq_cst decrement, so a submitter that
	 * skipped its wake because it saw us spinning has its task seen here
	 * (worker_work_visible's seq_cst loads); one that comes later sees no
	 * spinner and wakes someone itself.  Nothing visible: no wake, which
	 * keeps a lone task (the wake-latency case) from paying for a second
	 * futex wake before it runs. */
	if (found_work && IDLE_SPINNING(old) == 1 && worker_work_visible(w))
		park_wake_one(rt, w->node);
}

void park_worker(struct weft_worker *w, unsigned kind, bool (*recheck)(void *ctx), void *ctx)
{
	struct weft_rt *rt = w->rt;
	struct weft_node *n = rt->nodes[w->node];
	unsigned word;
	uint64_t mask = worker_mask(n, w, &word);

	if (w->pend_group)
		group_flush(w);
	if (w->spinning)
		park_spin_end(w, false);
	/* Patience for own-node work counts from the next search on; a
	 * sibling that spawns while we sleep shares and wakes us anyway. */
	w->local_wait_since = 0;
	store_relaxed(&w->park_kind, kind);
	store_relaxed(&w->stats.parks, w->stats.parks + 1);
	/* seq_cst: the announcement; pairs with claimers' fetch_and and with
	 * submitters' seq_cst load of idle_state. */
	fetch_or_seq_cst(&n->idle[word], mask);
	fetch_add_seq_cst(&n->idle_state, IDLE_PARKED_ONE);
	if (kind == PARK_KIND_MAIN)
		fetch_add_seq_cst(&rt->nparked_main, 1);

	bool claimed_or_token = false;
	if (recheck(ctx)) {
		/* seq_cst: races with claimers for our own bit. */
		uint64_t old = fetch_and_seq_cst(&n->idle[word], ~mask);
		if (old & mask) {
			fetch_sub_seq_cst(&n->idle_state, IDLE_PARKED_ONE);
			if (kind == PARK_KIND_MAIN)
				fetch_sub_seq_cst(&rt->nparked_main, 1);
			return;
		}
		/* A claimer beat us; its token is on the way. */
		claimed_or_token = true;
	}

	bool woke_from_sleep = false;
	/* A worker with a ring sleeps on it: it wakes for a token or for a
	 * completion of its own I/O (ring.c). */
	uint32_t sleeping = w->ring ? ring_sleep_value(w) : PARK_SLEEPING;
	bool io_woke = false;
	for (;;) {
		/* acquire: pairs with deliver_token's exchange. */
		uint32_t v = load_acquire(&w->park_word);
		if (v == PARK_TOKEN)
			break;
		if (v == PARK_AWAKE) {
			cas_acq_rel(&w->park_word, &v, sleeping);
			continue;
		}
		if (woke_from_sleep)
			store_relaxed(&w->stats.spurious_wakeups, w->stats.spurious_wakeups + 1);
		if (w->ring) {
			if (ring_sleep(w, sleeping)) {
				io_woke = true;
				break;
			}
			/* The poll park wakes every ms by design. */
			woke_from_sleep = !ring_park_polls(w);
			continue;
		}
		os_futex_wait(&w->park_word, PARK_SLEEPING, -1);
		woke_from_sleep = true;
	}
	if (io_woke) {
		/* Woken by a completion: take back the sleeping mark (a token
		 * that raced in is consumed with it; a claimer's claim is seen
		 * below in our idle bit). */
		exchange_acq_rel(&w->park_word, PARK_AWAKE);
	} else {
		store_relaxed(&w->park_word, PARK_AWAKE);
		store_relaxed(&w->stats.wakeups, w->stats.wakeups + 1);
	}

	if (w->ring)
		ring_after_park(w);
	if (claimed_or_token) {
		w->spinning = true;
		return;
	}
	/* The token may come from park_notify on an unclaimed worker (or be a
	 * stray one): make sure we are no longer listed as parked. */
	uint64_t old = fetch_and_seq_cst(&n->idle[word], ~mask);
	if (old & mask) {
		fetch_sub_seq_cst(&n->idle_state, IDLE_PARKED_ONE);
		if (kind == PARK_KIND_MAIN)
			fetch_sub_seq_cst(&rt->nparked_main, 1);
		w->spinning = false;
	} else {
		w->spinning = true;
	}
}
