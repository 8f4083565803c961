/*
 * hello.c: the smallest weft program.  Spawns a few tasks into a group,
 * waits for them, and shows which worker (and NUMA node) ran each one.
 */
#include <stdio.h>
#include <weft.h>

static weft_rt *rt;

static void hello(void *arg)
{
	int w = weft_current_worker();
	printf("task %d ran on worker %d (node %d)\n", (int)(long)arg, w, weft_worker_node(rt, (unsigned)w));
}

int main(void)
{
	int r = weft_create(&rt, NULL);
	if (r < 0) {
		fprintf(stderr, "weft_create: %d\n", r);
		return 1;
	}
	printf("weft %s: %u workers on %u node(s)\n", weft_version(), weft_worker_count(rt), weft_node_count(rt));
	struct weft_group g;
	weft_group_init(&g);
	for (long i = 0; i < 8; i++)
		weft_group_spawn(rt, &g, hello, (void *)i);
	weft_group_wait(rt, &g);
	weft_destroy(rt);
	return 0;
}
