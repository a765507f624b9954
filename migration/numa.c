/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * NUMA topology: the machine's CPUs, memory nodes and distances, discovery
 * through libnuma, and the injectable SPEC parser, which checks every value
 * against the machine (see numa.h for the syntax).
 */
#include <errno.h>
#include <numa.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "numa.h"

static bool G_GNUC_PRINTF(3, 4) bad_spec(GError **errp, const char *spec, const char *fmt, ...)
{
    g_autofree char *why = NULL;
    va_list ap;

    va_start(ap, fmt);
    why = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--numa-topology '%s': %s", spec, why);
    return false;
}

/* "N" or "N-M" list separated by ',' into @set (CPUs or nodes). */
static bool parse_list(const char *s, cpu_set_t *set)
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

/* "0-1,4" for @set, the inverse of parse_list() ("none" when empty). */
static void append_list(GString *s, const cpu_set_t *set)
{
    gsize start = s->len;
    int first = -1;

    for (int c = 0; c <= CPU_SETSIZE; c++) {
        bool in = c < CPU_SETSIZE && CPU_ISSET(c, set);
        if (in && first < 0) {
            first = c;
        } else if (!in && first >= 0) {
            g_string_append_printf(s, first == c - 1 ? "%d," : "%d-%d,", first, c - 1);
            first = -1;
        }
    }
    if (s->len == start) {
        g_string_append(s, "none,");
    }
    g_string_truncate(s, s->len - 1);
}

static char *list_string(const cpu_set_t *set)
{
    GString *s = g_string_new(NULL);

    append_list(s, set);
    return g_string_free(s, false);
}

/* ------------------------------- machine --------------------------------- */

/* A sysfs list file ("0-3,8\n") into @set; false if absent or malformed. */
static bool read_list(const char *path, cpu_set_t *set)
{
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return false;
    }
    return parse_list(g_strstrip(text), set);
}

/* Memory nodes: from sysfs and libnuma, or node 0 alone on a kernel without NUMA. */
static void read_nodes(sl_machine *m)
{
    bool numa = numa_available() >= 0;

    if (!numa || !read_list("/sys/devices/system/node/online", &m->nodes_online)) {
        CPU_ZERO(&m->nodes_online);
        CPU_SET(0, &m->nodes_online);
    }
    if (!numa || !read_list("/sys/devices/system/node/has_memory", &m->nodes_with_memory)) {
        m->nodes_with_memory = m->nodes_online;
    }
    m->nodes_allowed = m->nodes_online;
    for (int n = 0; numa && n < CPU_SETSIZE; n++) {
        if (!numa_bitmask_isbitset(numa_all_nodes_ptr, (unsigned)n)) {
            CPU_CLR(n, &m->nodes_allowed);
        }
    }
    for (int h = 0; numa && h < SL_MAX_NODES; h++) {
        g_autofree char *path = g_strdup_printf("/sys/devices/system/node/node%d/cpulist", h);
        if (!CPU_ISSET(h, &m->nodes_online) || !read_list(path, &m->node_cpus[h])) {
            CPU_ZERO(&m->node_cpus[h]); /* memory-only, or gone */
        }
        for (int k = 0; k < SL_MAX_NODES; k++) {
            bool both = CPU_ISSET(h, &m->nodes_online) && CPU_ISSET(k, &m->nodes_online);
            m->distance[h][k] = both ? (unsigned char)MIN(255, numa_distance(h, k)) : 0;
        }
    }
}

void sl_machine_read(sl_machine *m)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    memset(m, 0, sizeof(*m));
    if (!read_list("/sys/devices/system/cpu/online", &m->cpus_online)) {
        for (long c = 0; c < n && c < CPU_SETSIZE; c++) {
            CPU_SET((int)c, &m->cpus_online);
        }
    }
    if (sched_getaffinity(0, sizeof(m->cpus_allowed), &m->cpus_allowed) < 0) {
        m->cpus_allowed = m->cpus_online;
    }
    CPU_AND(&m->cpus_allowed, &m->cpus_allowed, &m->cpus_online);
    read_nodes(m);
}

static bool usable_memory(const sl_machine *m, int n)
{
    return CPU_ISSET(n, &m->nodes_online) && CPU_ISSET(n, &m->nodes_with_memory) &&
           CPU_ISSET(n, &m->nodes_allowed);
}

/* The first memory node that exists, has memory and is allowed, or -1. */
static int first_memory_node(const sl_machine *m)
{
    for (int n = 0; n < CPU_SETSIZE; n++) {
        if (usable_memory(m, n)) {
            return n;
        }
    }
    return -1;
}

/* Where real node @n's memory goes: @n, else the nearest usable node, else the first. */
static int memory_node_for(const sl_machine *m, int n)
{
    int best = -1;

    if (usable_memory(m, n)) {
        return n;
    }
    for (int k = 0; n < SL_MAX_NODES && k < SL_MAX_NODES; k++) {
        unsigned char d = m->distance[n][k];
        if (usable_memory(m, k) && d && (best < 0 || d < m->distance[n][best])) {
            best = k;
        }
    }
    return best >= 0 ? best : first_memory_node(m);
}

/* distance[h][i] from the machine's distances to each node's memory node. */
static void set_distances(sl_topology *t, const sl_machine *m)
{
    for (unsigned h = 0; h < SL_MAX_NODES; h++) {
        for (unsigned i = 0; i < t->nnodes; i++) {
            int mem = t->nodes[i].mem_node;
            t->distance[h][i] = mem >= 0 && mem < SL_MAX_NODES ? m->distance[h][mem] : 0;
        }
    }
}

/* ------------------------------- discovery ------------------------------- */

/* One node with every allowed CPU: the fallback and the one-node case. */
static void single_node(sl_topology *t, const sl_machine *m)
{
    memset(t, 0, sizeof(*t));
    t->nnodes = 1;
    t->nodes[0].cpus = m->cpus_allowed;
    t->nodes[0].ncpus = (unsigned)CPU_COUNT(&t->nodes[0].cpus);
    t->nodes[0].mem_node = MAX(0, first_memory_node(m));
    set_distances(t, m);
}

/*
 * Adds real node @n with the CPUs of it this process may use (none: no
 * group); its memory is bound to @n, or to the nearest usable node when @n
 * has no memory this process may use.
 */
static void add_host_node(sl_topology *t, const sl_machine *m, int n)
{
    sl_node *nd = &t->nodes[t->nnodes];

    memset(nd, 0, sizeof(*nd));
    nd->id = n;
    nd->mem_node = MAX(0, memory_node_for(m, n));
    CPU_AND(&nd->cpus, &m->node_cpus[n], &m->cpus_allowed);
    nd->ncpus = (unsigned)CPU_COUNT(&nd->cpus);
    t->nnodes += nd->ncpus > 0; /* memory-only nodes get no prefetch group */
}

void sl_topology_discover_on(const sl_machine *m, sl_topology *t)
{
    memset(t, 0, sizeof(*t));
    for (int n = 0; n < SL_MAX_NODES; n++) {
        if (CPU_ISSET(n, &m->nodes_online)) {
            add_host_node(t, m, n);
        }
    }
    if (t->nnodes == 0) {
        single_node(t, m);
    }
    set_distances(t, m);
}

bool sl_topology_discover(sl_topology *t, GError **errp)
{
    sl_machine m;

    sl_machine_read(&m);
    sl_topology_discover_on(&m, t);
    return true;
}

/* --------------------------------- SPEC ---------------------------------- */

/* "COUNT": fake nodes dealt the allowed CPUs round-robin, on the first memory node. */
static bool parse_count(const char *spec, long count, const sl_machine *m, sl_topology *t,
                        GError **errp)
{
    int cpu[CPU_SETSIZE], ncpu = 0, mem = first_memory_node(m);

    if (count < 1 || count > SL_MAX_NODES) {
        return bad_spec(errp, spec, "the node count must be from 1 to %d", SL_MAX_NODES);
    }
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &m->cpus_allowed)) {
            cpu[ncpu++] = c;
        }
    }
    if (ncpu == 0 || mem < 0) {
        return bad_spec(errp, spec, "this process may use no %s", ncpu ? "memory node" : "CPU");
    }
    memset(t, 0, sizeof(*t));
    t->nnodes = (unsigned)count;
    for (long n = 0; n < count; n++) {
        t->nodes[n].id = (int)n;
        t->nodes[n].mem_node = mem;
    }
    for (long c = 0; c < MAX(ncpu, count); c++) {
        CPU_SET(cpu[c % ncpu], &t->nodes[c % count].cpus);
    }
    for (long n = 0; n < count; n++) {
        t->nodes[n].ncpus = (unsigned)CPU_COUNT(&t->nodes[n].cpus);
    }
    return true;
}

/* Every CPU of @nd exists and may be used; its memory node exists, has memory, is allowed. */
static bool check_node(const char *spec, const sl_node *nd, const sl_machine *m, GError **errp)
{
    int mem = nd->mem_node;

    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (CPU_ISSET(c, &nd->cpus) && !CPU_ISSET(c, &m->cpus_online)) {
            g_autofree char *have = list_string(&m->cpus_online);
            return bad_spec(errp, spec, "node %d: CPU %d does not exist here (online CPUs: %s)",
                            nd->id, c, have);
        }
        if (CPU_ISSET(c, &nd->cpus) && !CPU_ISSET(c, &m->cpus_allowed)) {
            g_autofree char *have = list_string(&m->cpus_allowed);
            return bad_spec(errp, spec, "node %d: CPU %d is not allowed for this process "
                            "(allowed CPUs: %s)", nd->id, c, have);
        }
    }
    if (mem < 0 || mem >= CPU_SETSIZE || !CPU_ISSET(mem, &m->nodes_online)) {
        g_autofree char *have = list_string(&m->nodes_online);
        return bad_spec(errp, spec, "node %d: memory node %d does not exist here (nodes: %s)",
                        nd->id, mem, have);
    }
    if (!CPU_ISSET(mem, &m->nodes_with_memory)) {
        g_autofree char *have = list_string(&m->nodes_with_memory);
        return bad_spec(errp, spec, "node %d: memory node %d has no memory (nodes with "
                        "memory: %s)", nd->id, mem, have);
    }
    if (!CPU_ISSET(mem, &m->nodes_allowed)) {
        g_autofree char *have = list_string(&m->nodes_allowed);
        return bad_spec(errp, spec, "node %d: memory node %d is not allowed for this process "
                        "(allowed memory nodes: %s)", nd->id, mem, have);
    }
    return true;
}

/* "ID:CPUS[@MEMNODE]" into node slot @i (MEMNODE: the first memory node). */
static bool parse_node(const char *spec, const char *text, const sl_machine *m,
                       sl_topology *t, unsigned i, GError **errp)
{
    g_autofree char *copy = g_strdup(text);
    char *colon = strchr(copy, ':'), *at = strchr(copy, '@'), *end;
    sl_node *nd = &t->nodes[i];
    long id, mem = first_memory_node(m);

    if (!colon) {
        return bad_spec(errp, spec, "a node is ID:CPUS[@MEMNODE]");
    }
    *colon = 0;
    if (at) {
        *at = 0;
        mem = strtol(at + 1, &end, 10);
        if (*end || end == at + 1 || mem < 0) {
            return bad_spec(errp, spec, "MEMNODE must be a node number");
        }
    }
    nd->mem_node = (int)MIN(mem, G_MAXINT);
    id = strtol(copy, &end, 10);
    if (*end || end == copy || id < 0 || id > 1023 || sl_topology_index(t, (int)id) >= 0) {
        return bad_spec(errp, spec, "node IDs must be distinct numbers from 0 to 1023");
    }
    nd->id = (int)id;
    if (!parse_list(colon + 1, &nd->cpus)) {
        return bad_spec(errp, spec, "node %ld: CPUS must be a list like 0-3,8", id);
    }
    nd->ncpus = (unsigned)CPU_COUNT(&nd->cpus);
    return check_node(spec, nd, m, errp);
}

static bool parse_nodes(const char *spec, const sl_machine *m, sl_topology *t, GError **errp)
{
    g_auto(GStrv) nodes = g_strsplit(spec, ";", -1);

    memset(t, 0, sizeof(*t));
    for (unsigned i = 0; nodes[i]; i++) {
        if (i >= SL_MAX_NODES) {
            return bad_spec(errp, spec, "more than %d nodes", SL_MAX_NODES);
        }
        t->nodes[i].id = -1;
        t->nnodes = i + 1;
        if (!parse_node(spec, nodes[i], m, t, i, errp)) {
            return false;
        }
    }
    return t->nnodes > 0 || bad_spec(errp, spec, "no nodes");
}

bool sl_topology_parse_on(const char *spec, const sl_machine *m, sl_topology *t,
                          GError **errp)
{
    char *end;
    long count = strtol(spec, &end, 10);
    bool ok = *spec && !*end ? parse_count(spec, count, m, t, errp)
                             : parse_nodes(spec, m, t, errp);

    if (ok) {
        set_distances(t, m);
        t->injected = true;
    }
    return ok;
}

bool sl_topology_parse(const char *spec, sl_topology *t, GError **errp)
{
    sl_machine m;

    sl_machine_read(&m);
    return sl_topology_parse_on(spec, &m, t, errp);
}

/* ------------------------------- queries --------------------------------- */

int sl_topology_index(const sl_topology *t, int id)
{
    for (unsigned i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

/* The node whose memory is nearest real node @real by distance (ties: the first), or -1. */
static int nearest_node(const sl_topology *t, int real)
{
    int best = -1;

    for (unsigned i = 0; real >= 0 && real < SL_MAX_NODES && i < t->nnodes; i++) {
        unsigned char d = t->distance[real][i];
        if (d && (best < 0 || d < t->distance[real][best])) {
            best = (int)i;
        }
    }
    return best;
}

unsigned sl_topology_hint_index(const sl_topology *t, int hint)
{
    int idx = sl_topology_index(t, hint), best;

    if (idx >= 0) {
        return (unsigned)idx;
    }
    best = nearest_node(t, hint);
    return best >= 0 ? (unsigned)best : (unsigned)hint % t->nnodes;
}

unsigned sl_topology_memory_index(const sl_topology *t, int mem)
{
    int best;

    for (unsigned i = 0; i < t->nnodes; i++) {
        if (t->nodes[i].mem_node == mem) {
            return i;
        }
    }
    best = nearest_node(t, mem);
    return best >= 0 ? (unsigned)best : 0;
}

char *sl_topology_describe(const sl_topology *t)
{
    GString *s = g_string_new(NULL);

    for (unsigned i = 0; i < t->nnodes; i++) {
        const sl_node *nd = &t->nodes[i];
        g_string_append_printf(s, "%s%d:", i ? ";" : "", nd->id);
        append_list(s, &nd->cpus);
        g_string_append_printf(s, "@%d", nd->mem_node);
    }
    return g_string_free(s, false);
}
