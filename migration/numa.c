/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * NUMA topology: discovery through libnuma and the injectable SPEC parser
 * (see numa.h for the syntax).
 */
#include <errno.h>
#include <numa.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "numa.h"

static bool bad_spec(GError **errp, const char *spec, const char *why)
{
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--numa-topology '%s': %s", spec, why);
    return false;
}

static void set_distances(sl_topology *t)
{
    for (unsigned i = 0; i < t->nnodes; i++) {
        for (unsigned j = 0; j < t->nnodes; j++) {
            t->distance[i][j] = i == j ? 10 : 20;
        }
    }
}

/* One node with every online CPU: the fallback and the one-node case. */
static void single_node(sl_topology *t)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    memset(t, 0, sizeof(*t));
    t->nnodes = 1;
    CPU_ZERO(&t->nodes[0].cpus);
    for (long c = 0; c < n && c < CPU_SETSIZE; c++) {
        CPU_SET((int)c, &t->nodes[0].cpus);
    }
    t->nodes[0].ncpus = (unsigned)CPU_COUNT(&t->nodes[0].cpus);
    set_distances(t);
}

bool sl_topology_discover(sl_topology *t, GError **errp)
{
    struct bitmask *cpus;

    single_node(t);
    if (numa_available() < 0) {
        return true;
    }
    memset(t, 0, sizeof(*t));
    cpus = numa_allocate_cpumask();
    for (int n = 0; n <= numa_max_node() && t->nnodes < SL_MAX_NODES; n++) {
        sl_node *nd = &t->nodes[t->nnodes];
        if (!numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)n) ||
            numa_node_to_cpus(n, cpus) < 0) {
            continue;
        }
        nd->id = nd->mem_node = n;
        CPU_ZERO(&nd->cpus);
        for (unsigned c = 0; c < cpus->size && c < CPU_SETSIZE; c++) {
            if (numa_bitmask_isbitset(cpus, c)) {
                CPU_SET(c, &nd->cpus);
            }
        }
        nd->ncpus = (unsigned)CPU_COUNT(&nd->cpus);
        t->nnodes += nd->ncpus > 0; /* memory-only nodes get no prefetch group */
    }
    numa_free_cpumask(cpus);
    if (t->nnodes == 0) {
        single_node(t);
        return true;
    }
    for (unsigned i = 0; i < t->nnodes; i++) {
        for (unsigned j = 0; j < t->nnodes; j++) {
            t->distance[i][j] = (unsigned char)numa_distance(t->nodes[i].id, t->nodes[j].id);
        }
    }
    return true;
}

/* "N" or "N-M" list separated by ',' into @set. */
static bool parse_cpus(const char *s, cpu_set_t *set)
{
    g_auto(GStrv) parts = g_strsplit(s, ",", -1);

    CPU_ZERO(set);
    for (unsigned i = 0; parts[i]; i++) {
        char *end;
        long a = strtol(parts[i], &end, 10), b = a;
        if (end == parts[i]) {
            return false;
        }
        if (*end == '-') {
            char *e2;
            b = strtol(end + 1, &e2, 10);
            end = e2;
        }
        if (*end || a < 0 || b < a || b >= CPU_SETSIZE) {
            return false;
        }
        for (long c = a; c <= b; c++) {
            CPU_SET((int)c, set);
        }
    }
    return CPU_COUNT(set) > 0;
}

/* "COUNT": fake nodes dealt the online CPUs round-robin. */
static bool parse_count(const char *spec, long count, sl_topology *t, GError **errp)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

    if (count < 1 || count > SL_MAX_NODES) {
        return bad_spec(errp, spec, "the node count must be from 1 to 64");
    }
    memset(t, 0, sizeof(*t));
    t->nnodes = (unsigned)count;
    for (long n = 0; n < count; n++) {
        t->nodes[n].id = (int)n;
        CPU_ZERO(&t->nodes[n].cpus);
    }
    for (long c = 0; c < MAX(ncpu, count); c++) {
        CPU_SET((int)(c % ncpu), &t->nodes[c % count].cpus);
    }
    for (long n = 0; n < count; n++) {
        t->nodes[n].ncpus = (unsigned)CPU_COUNT(&t->nodes[n].cpus);
    }
    return true;
}

/* "ID:CPUS[@MEMNODE]" into node slot @i. */
static bool parse_node(const char *spec, const char *text, sl_topology *t, unsigned i,
                       GError **errp)
{
    g_autofree char *copy = g_strdup(text);
    char *colon = strchr(copy, ':'), *at = strchr(copy, '@'), *end;
    sl_node *nd = &t->nodes[i];
    long id;

    if (!colon) {
        return bad_spec(errp, spec, "a node is ID:CPUS[@MEMNODE]");
    }
    *colon = 0;
    if (at) {
        *at = 0;
        nd->mem_node = (int)strtol(at + 1, &end, 10);
        if (*end || end == at + 1 || nd->mem_node < 0) {
            return bad_spec(errp, spec, "MEMNODE must be a node number");
        }
    }
    id = strtol(copy, &end, 10);
    if (*end || end == copy || id < 0 || id > 1023 || sl_topology_index(t, (int)id) >= 0) {
        return bad_spec(errp, spec, "node IDs must be distinct numbers");
    }
    nd->id = (int)id;
    if (!parse_cpus(colon + 1, &nd->cpus)) {
        return bad_spec(errp, spec, "CPUS must be a list like 0-3,8");
    }
    nd->ncpus = (unsigned)CPU_COUNT(&nd->cpus);
    return true;
}

bool sl_topology_parse(const char *spec, sl_topology *t, GError **errp)
{
    g_auto(GStrv) nodes = NULL;
    char *end;
    long count = strtol(spec, &end, 10);

    if (*spec && !*end) {
        if (!parse_count(spec, count, t, errp)) {
            return false;
        }
        set_distances(t);
        t->injected = true;
        return true;
    }
    memset(t, 0, sizeof(*t));
    nodes = g_strsplit(spec, ";", -1);
    for (unsigned i = 0; nodes[i]; i++) {
        if (i >= SL_MAX_NODES) {
            return bad_spec(errp, spec, "more than 64 nodes");
        }
        t->nodes[i].id = -1;
        t->nnodes = i + 1;
        if (!parse_node(spec, nodes[i], t, i, errp)) {
            return false;
        }
    }
    if (t->nnodes == 0) {
        return bad_spec(errp, spec, "no nodes");
    }
    set_distances(t);
    t->injected = true;
    return true;
}

int sl_topology_index(const sl_topology *t, int id)
{
    for (unsigned i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

char *sl_topology_describe(const sl_topology *t)
{
    GString *s = g_string_new(NULL);

    for (unsigned i = 0; i < t->nnodes; i++) {
        const sl_node *nd = &t->nodes[i];
        int first = -1;
        g_string_append_printf(s, "%s%d:", i ? ";" : "", nd->id);
        for (int c = 0; c <= CPU_SETSIZE; c++) {
            bool in = c < CPU_SETSIZE && CPU_ISSET(c, &nd->cpus);
            if (in && first < 0) {
                first = c;
            } else if (!in && first >= 0) {
                g_string_append_printf(s, first == c - 1 ? "%d," : "%d-%d,", first, c - 1);
                first = -1;
            }
        }
        g_string_truncate(s, s->len - 1);
        g_string_append_printf(s, "@%d", nd->mem_node);
    }
    return g_string_free(s, false);
}
