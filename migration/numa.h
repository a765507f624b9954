/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host NUMA topology as the restore uses it: nodes, their CPUs, distances,
 * and the real node that holds each node's memory.  Discovered with libnuma,
 * or injected from a SPEC string so tests can simulate several nodes over a
 * machine's real CPUs and memory:
 *
 *     SPEC  := COUNT | NODE (';' NODE)*
 *     NODE  := ID ':' CPUS ['@' MEMNODE]
 *     CPUS  := N | N-M, separated by ','
 *
 * "4" makes 4 fake nodes and deals the machine's CPUs out round-robin (a CPU
 * is shared when there are more nodes than CPUs), memory on real node 0.
 * "0:0-3@0;1:4-7@1" names each node's CPUs and the real node of its memory.
 * A real one-node machine is the one-group case: nothing special.
 */
#ifndef SNAPLOAD_NUMA_H
#define SNAPLOAD_NUMA_H

#include <sched.h>
#include <stdbool.h>
#include <glib.h>

#define SL_MAX_NODES 64

typedef struct {
    int id;             /* node number as the user names it */
    int mem_node;       /* real node that holds this node's memory */
    cpu_set_t cpus;     /* CPUs of this node */
    unsigned ncpus;
} sl_node;

typedef struct {
    unsigned nnodes;
    bool injected;      /* from a SPEC, not from the host */
    sl_node nodes[SL_MAX_NODES];
    unsigned char distance[SL_MAX_NODES][SL_MAX_NODES];
} sl_topology;

/** sl_topology_discover: the host's topology (one node without libnuma support). */
bool sl_topology_discover(sl_topology *t, GError **errp);

/** sl_topology_parse: a topology from @spec (see above); errors name the bad part. */
bool sl_topology_parse(const char *spec, sl_topology *t, GError **errp);

/** sl_topology_index: index of the node numbered @id, or -1. */
int sl_topology_index(const sl_topology *t, int id);

/** sl_topology_describe: "0:0-1@0;1:2-3@0" (caller frees). */
char *sl_topology_describe(const sl_topology *t);

#endif /* SNAPLOAD_NUMA_H */
