/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Host NUMA topology as the restore uses it: nodes, their CPUs, the real
 * node that holds each node's memory, and distances for node hints the
 * topology lacks.  Discovered with libnuma, or injected from a SPEC string
 * so tests can simulate several nodes over a machine's real CPUs and memory:
 *
 *     SPEC  := COUNT | NODE (';' NODE)*
 *     NODE  := ID ':' CPUS ['@' MEMNODE]
 *     CPUS  := N | N-M, separated by ','
 *
 * "4" makes 4 fake nodes and deals the CPUs this process may run on out
 * round-robin (a CPU is shared when there are more nodes than CPUs), memory
 * on the first real node that has memory and is allowed.  "0:0-3@0;1:4-7@1"
 * names each node's CPUs and the real node of its memory.  A SPEC is checked
 * against the machine when parsed (docs/numa.md).  A real one-node machine
 * is the one-group case: nothing special.
 */
#ifndef SNAPLOAD_NUMA_H
#define SNAPLOAD_NUMA_H

#include <sched.h>
#include <stdbool.h>
#include <glib.h>

#define SL_MAX_NODES 64

/* A set of real node numbers below CPU_SETSIZE (1024): the CPU_* macros apply. */
typedef cpu_set_t sl_nodeset;

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
    /* distance[h][i]: from real node h to the memory of nodes[i]; 0 unknown. */
    unsigned char distance[SL_MAX_NODES][SL_MAX_NODES];
} sl_topology;

/* What a SPEC is checked against: this machine's CPUs and memory nodes. */
typedef struct {
    cpu_set_t cpus_online;
    cpu_set_t cpus_allowed;      /* the calling thread's affinity */
    sl_nodeset nodes_online;
    sl_nodeset nodes_with_memory;
    sl_nodeset nodes_allowed;    /* the cpuset's memory nodes */
    cpu_set_t node_cpus[SL_MAX_NODES]; /* CPUs of real nodes 0..63 (none: memory-only) */
    unsigned char distance[SL_MAX_NODES][SL_MAX_NODES]; /* real nodes; 0 unknown */
} sl_machine;

/** sl_machine_read: this machine as seen by the calling thread. */
void sl_machine_read(sl_machine *m);

/**
 * sl_topology_discover: the host's topology: a node per real node (below 64)
 * with CPUs this process may use, its memory on that node or, when it has
 * none this process may use, on the nearest that has; one node holding
 * every allowed CPU without libnuma support.
 */
bool sl_topology_discover(sl_topology *t, GError **errp);

/** sl_topology_discover_on: sl_topology_discover() on machine @m. */
void sl_topology_discover_on(const sl_machine *m, sl_topology *t);

/**
 * sl_topology_parse: a topology from @spec (see above), checked against this
 * machine; errors name the bad part and its value.
 */
bool sl_topology_parse(const char *spec, sl_topology *t, GError **errp);

/** sl_topology_parse_on: sl_topology_parse() checked against @m instead. */
bool sl_topology_parse_on(const char *spec, const sl_machine *m, sl_topology *t,
                          GError **errp);

/** sl_topology_index: index of the node numbered @id, or -1. */
int sl_topology_index(const sl_topology *t, int id);

/**
 * sl_topology_hint_index: the node that takes a block hinted for node @hint
 * (>= 0): that node if the topology has it, else the nearest node by
 * distance from real node @hint (ties: the first), else @hint modulo the
 * number of nodes when no distance is known.
 */
unsigned sl_topology_hint_index(const sl_topology *t, int hint);

/**
 * sl_topology_memory_index: the node that takes memory a policy places on
 * real node @mem: the first node whose memory is there, else the nearest
 * node by distance from @mem (ties: the first), else the first node.
 */
unsigned sl_topology_memory_index(const sl_topology *t, int mem);

/** sl_topology_describe: "0:0-1@0;1:2-3@0" (caller frees). */
char *sl_topology_describe(const sl_topology *t);

#endif /* SNAPLOAD_NUMA_H */
