/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * QEMU memory backends from a command line or over QMP, and fresh memory
 * files for a restore (see qemu.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>
#include "backends/backend.h"
#include "cli.h"
#include "qemu.h"

void sl_qemu_backend_free(sl_qemu_backend *b)
{
    if (b) {
        g_free(b->id);
        g_free(b->mem_path);
        g_free(b);
    }
}

/* A boolean option as QEMU reads it: on, yes, true or y (found by review:
 * readonly=y went past the refusal of readonly=on). */
static bool parse_bool(const char *v)
{
    return !g_strcmp0(v, "on") || !g_strcmp0(v, "true") || !g_strcmp0(v, "yes") ||
           !g_strcmp0(v, "y");
}

/* QEMU option text "k=v,k=v" where ",," stands for a comma in a value. */
static GHashTable *split_options(const char *text)
{
    GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    GString *cur = g_string_new(NULL);

    for (const char *p = text;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
            continue;
        }
        if (*p && *p != ',') {
            g_string_append_c(cur, *p);
            continue;
        }
        char *eq = strchr(cur->str, '=');
        if (eq) {
            g_hash_table_insert(h, g_strndup(cur->str, (gsize)(eq - cur->str)), g_strdup(eq + 1));
        } else if (cur->len) {
            g_hash_table_insert(h, g_strdup("qom-type"), g_strdup(cur->str));
        }
        g_string_truncate(cur, 0);
        if (!*p) {
            break;
        }
    }
    g_string_free(cur, true);
    return h;
}

/*
 * An -object in QEMU's JSON syntax (what libvirt writes), as split_options()
 * gives the dotted one: every member of scalar value as text (booleans as
 * "on"/"off"); NULL if @text is no JSON object.
 */
static GHashTable *json_options(const char *text)
{
    g_autoptr(JsonParser) p = json_parser_new();
    GHashTable *h;
    JsonObject *o;
    GList *names;

    if (!json_parser_load_from_data(p, text, -1, NULL) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        return NULL;
    }
    h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    o = json_node_get_object(json_parser_get_root(p));
    names = json_object_get_members(o);
    for (GList *l = names; l; l = l->next) {
        JsonNode *v = json_object_get_member(o, l->data);
        GType t = JSON_NODE_HOLDS_VALUE(v) ? json_node_get_value_type(v) : G_TYPE_INVALID;
        char *s = t == G_TYPE_STRING    ? g_strdup(json_node_get_string(v))
                  : t == G_TYPE_BOOLEAN ? g_strdup(json_node_get_boolean(v) ? "on" : "off")
                  : t == G_TYPE_INT64   ? g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(v))
                                        : NULL;
        if (s) {
            g_hash_table_insert(h, g_strdup(l->data), s);
        }
    }
    g_list_free(names);
    return h;
}

/* The options of -object @text, dotted or JSON. */
static GHashTable *object_options(const char *text)
{
    GHashTable *h = text[0] == '{' ? json_options(text) : NULL;

    return h ? h : split_options(text);
}

/*
 * A size as QEMU reads one in its options: what cli_parse_size() takes, or
 * a decimal fraction with a unit ("0.25G", "1.5M"), which QEMU takes too
 * (found by testing: `-m 0.25G` was refused).  The bytes are truncated to
 * a whole number, as QEMU does.
 */
static bool qemu_size(const char *s, uint64_t *out)
{
    static const char units[] = "KMGT";
    const char *dot = strchr(s, '.'), *u;
    char *end = NULL;
    double v;

    if (cli_parse_size(s, out)) {
        return true;
    }
    if (!dot || !g_ascii_isdigit(*s) || !g_ascii_isdigit(dot[1])) {
        return false;
    }
    v = g_ascii_strtod(s, &end);
    u = end && *end ? strchr(units, g_ascii_toupper(*end)) : NULL;
    if (!u || end[1] || v <= 0 || v >= 1024.0) {
        return false;
    }
    *out = (uint64_t)(v * (double)(1ull << (10 * (u - units + 1))));
    return *out > 0;
}

/* A memory-backend-file or -ram object's options (@anon: -ram: no mem-path). */
static sl_qemu_backend *backend_from_options(const char *text, bool anon, GError **errp)
{
    g_autoptr(GHashTable) h = object_options(text);
    const char *id = g_hash_table_lookup(h, "id");
    const char *path = g_hash_table_lookup(h, "mem-path");
    const char *size = g_hash_table_lookup(h, "size");
    sl_qemu_backend *b;
    uint64_t bytes;

    if (!id || (!anon && !path) || !size || !qemu_size(size, &bytes)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "-object %s: a memory-backend-%s needs "
                    "id=%s and a size= like 4G", text, anon ? "ram" : "file",
                    anon ? "" : ", mem-path=");
        return NULL;
    }
    b = g_new0(sl_qemu_backend, 1);
    b->id = g_strdup(id);
    b->mem_path = anon ? NULL : g_strdup(path);
    b->size = bytes;
    if (g_hash_table_lookup(h, "offset") &&
        !qemu_size(g_hash_table_lookup(h, "offset"), &b->offset)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "-object %s: offset= is not a size", text);
        sl_qemu_backend_free(b);
        return NULL;
    }
    b->share = parse_bool(g_hash_table_lookup(h, "share"));
    b->readonly = parse_bool(g_hash_table_lookup(h, "readonly"));
    b->anon = anon && !b->share;
    return b;
}

/* The value of option @opt (e.g. "-m") in @argv, or NULL. */
static const char *arg_of(char **argv, const char *opt)
{
    const char *v = NULL;

    for (char **a = argv; *a; a++) {
        if (!strcmp(*a, opt) && a[1]) {
            v = a[1]; /* the last one counts, as for QEMU */
        }
    }
    return v;
}

/*
 * Every occurrence of option @name in @argv (spelled -NAME or --NAME, and
 * -@alias/--@alias if not NULL: -M for -machine) merged as QEMU merges
 * them: one table of its key=value parts, a later value replacing an
 * earlier one, a bare first part under @implied ("size" for -m, "type"
 * for -machine); later bare parts (`-machine q35,usb`: usb=on) are not
 * read.
 * NULL if the option is not given.  Found by a user's test: `-m 256M -m
 * slots=2,maxmem=1G` and `--m 256M` were refused, or read as 128M.
 */
static GHashTable *merged_opts(char **argv, const char *name, const char *alias,
                               const char *implied)
{
    GHashTable *all = NULL;

    for (char **a = argv; *a && a[1]; a++) {
        const char *o = *a + (a[0][0] == '-') + (a[0][0] == '-' && a[0][1] == '-');
        if (a[0][0] != '-' || (strcmp(o, name) && (!alias || strcmp(o, alias)))) {
            continue;
        }
        const char *text = *++a, *comma = strchr(text, ',');
        g_autofree char *first = comma ? g_strndup(text, (gsize)(comma - text)) : g_strdup(text);
        g_autoptr(GHashTable) one = split_options(text);
        GHashTableIter it;
        gpointer k, v;
        all = all ? all : g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_hash_table_iter_init(&it, one);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            if (strcmp(k, "qom-type")) { /* a bare part: only the first one, below */
                g_hash_table_insert(all, g_strdup(k), g_strdup(v));
            }
        }
        if (*first && !strchr(first, '=')) {
            g_hash_table_insert(all, g_strdup(implied), g_steal_pointer(&first));
        }
    }
    return all;
}

/* The x86 family of machine type @name: the i440FX or the Q35 one, by its
 * upstream alias or versioned name; NULL for any other (microvm, a
 * distribution's alias such as ubuntu): those are left to QEMU. */
static const char *x86_family(const char *name)
{
    if (!strcmp(name, "pc") || g_str_has_prefix(name, "pc-i440fx-")) {
        return "pc-i440fx-";
    }
    return !strcmp(name, "q35") || g_str_has_prefix(name, "pc-q35-") ? "pc-q35-" : NULL;
}

/*
 * Whether QEMU's machine type @given (-machine's) may make @saved (as a
 * stream's configuration names it: pc-q35-10.0): refused only where both
 * are upstream x86 machines known apart (found by a user's test: q35's
 * snapshot restored with -machine pc): another family, or another
 * versioned name.  An alias of another version passes, and QEMU itself
 * refuses it; names this cannot tell (a distribution's alias, another
 * architecture's machines) are left to QEMU (found by review).
 */
static bool machine_fits(const char *saved, const char *given)
{
    const char *fs = x86_family(saved), *fg = x86_family(given);

    if (!strcmp(saved, given) || !fs || !fg) {
        return true;
    }
    return fs == fg && (!strcmp(given, "pc") || !strcmp(given, "q35"));
}

bool sl_qemu_args_machine_fits(char **argv, const char *saved, GError **errp)
{
    g_autoptr(GHashTable) machine = merged_opts(argv, "machine", "M", "type");
    const char *given = machine ? g_hash_table_lookup(machine, "type") : NULL;

    /* No -machine: the binary's default, which this cannot tell (a build's
     * own default may be q35): left to QEMU. */
    if (!saved || !*saved || !given || machine_fits(saved, given)) {
        return true;
    }
    g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "the snapshot is of machine type %s, but "
                "QEMU's arguments make %s (-machine): QEMU would refuse its device state; "
                "give -machine %s", saved, given, saved);
    return false;
}

char *sl_qemu_args_object_type(char **argv, const char *id)
{
    char *type = NULL;

    for (char **a = argv; *a && a[1]; a++) {
        if (strcmp(*a, "-object") && strcmp(*a, "--object")) {
            continue;
        }
        g_autoptr(GHashTable) h = object_options(*++a);
        if (!g_strcmp0(g_hash_table_lookup(h, "id"), id)) {
            g_free(type);
            type = g_strdup(g_hash_table_lookup(h, "qom-type"));
        }
    }
    return type;
}

const char *sl_qemu_args_mem_path(char **argv)
{
    const char *p = arg_of(argv, "-mem-path");

    return p ? p : arg_of(argv, "--mem-path");
}

/* Plain `-m` RAM ("pc.ram", anonymous) unless -machine names a memory-backend. */
static bool implicit_ram(char **argv, GPtrArray *out, GError **errp)
{
    g_autoptr(GHashTable) machine = merged_opts(argv, "machine", "M", "type");
    g_autoptr(GHashTable) mopts = merged_opts(argv, "m", NULL, "size");
    /* No size (`-m slots=2,maxmem=1G`): QEMU's default. */
    const char *size = mopts && g_hash_table_lookup(mopts, "size")
                           ? g_hash_table_lookup(mopts, "size") : "128M";
    g_autofree char *withunit = NULL;
    sl_qemu_backend *b;
    uint64_t bytes;

    if (machine && g_hash_table_lookup(machine, "memory-backend")) {
        return true;
    }
    if (sl_qemu_args_mem_path(argv)) {
        return true; /* RAM in a private mapping of that file: not anonymous pc.ram */
    }
    if (size && g_ascii_isdigit(size[strlen(size) - 1])) {
        size = withunit = g_strdup_printf("%sM", size); /* -m counts MiB without a unit */
    }
    if (!size || !qemu_size(size, &bytes)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "-m: %s is not a size",
                    size ? size : "no size given");
        return false;
    }
    b = g_new0(sl_qemu_backend, 1);
    b->id = g_strdup("pc.ram");
    b->size = bytes;
    b->anon = true;
    g_ptr_array_add(out, b);
    return true;
}

GPtrArray *sl_qemu_args_backends(char **argv, GError **errp)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)sl_qemu_backend_free);

    for (char **a = argv; *a; a++) {
        if ((strcmp(*a, "-object") && strcmp(*a, "--object")) || !a[1]) {
            continue;
        }
        a++;
        g_autoptr(GHashTable) h = object_options(*a);
        const char *type = g_hash_table_lookup(h, "qom-type");
        bool file = !g_strcmp0(type, "memory-backend-file");
        if (!file && g_strcmp0(type, "memory-backend-ram")) {
            continue;
        }
        sl_qemu_backend *b = backend_from_options(*a, !file, errp);
        if (!b) {
            g_ptr_array_unref(out);
            return NULL;
        }
        g_ptr_array_add(out, b);
    }
    if (!implicit_ram(argv, out, errp)) {
        g_ptr_array_unref(out);
        return NULL;
    }
    for (guint i = 0; i < out->len; i++) { /* -objects, then -m's RAM: QEMU's order */
        ((sl_qemu_backend *)g_ptr_array_index(out, i))->order = i;
    }
    return out;
}

/* qom-get PATH PROP as a string (numbers and booleans converted). */
static char *qom_get(sl_qmp *q, const char *path, const char *prop, GError **errp)
{
    g_autofree char *args = g_strdup_printf("{\"path\": \"%s\", \"property\": \"%s\"}", path, prop);
    g_autoptr(JsonNode) r = sl_qmp_cmd(q, "qom-get", args, errp);

    if (!r || !JSON_NODE_HOLDS_VALUE(r)) {
        return NULL;
    }
    switch (json_node_get_value_type(r) == G_TYPE_STRING ? 0
            : json_node_get_value_type(r) == G_TYPE_BOOLEAN ? 1 : 2) {
    case 0: return g_strdup(json_node_get_string(r));
    case 1: return g_strdup(json_node_get_boolean(r) ? "on" : "off");
    default: return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(r));
    }
}

/*
 * A relative mem-path @mem as QEMU took it: from QEMU's working directory
 * (its /proc/PID/cwd), not ours (found by a user's test: a save run from
 * another directory than QEMU's named another file, or none), where a file
 * is there.  @mem as it is when absolute, when QEMU's directory cannot be
 * read, or when nothing is there: QEMU with -daemonize or -chroot opened
 * its backends before it moved to /, and the caller's own directory may
 * be the one (found by review).  The save checks that QEMU maps the file.
 */
static char *from_qemus_dir(sl_qmp *q, char *mem)
{
    pid_t pid = sl_qmp_peer_pid(q);
    g_autofree char *link = pid > 0 ? g_strdup_printf("/proc/%d/cwd", (int)pid) : NULL;
    g_autofree char *cwd = link ? g_file_read_link(link, NULL) : NULL;
    char *abs;

    if (!mem || g_path_is_absolute(mem) || !cwd) {
        return mem;
    }
    abs = g_build_filename(cwd, mem, NULL);
    if (access(abs, F_OK) < 0) {
        g_free(abs);
        return mem;
    }
    g_free(mem);
    return abs;
}

/* Backend @id, a memory-backend-file, or (@ram) a memory-backend-ram. */
static sl_qemu_backend *backend_over_qmp(sl_qmp *q, const char *id, bool ram, GError **errp)
{
    g_autofree char *path = g_strdup_printf("/objects/%s", id);
    g_autofree char *mem = ram ? NULL : qom_get(q, path, "mem-path", errp);
    g_autofree char *size = mem || ram ? qom_get(q, path, "size", errp) : NULL;
    g_autofree char *share = size ? qom_get(q, path, "share", errp) : NULL;
    sl_qemu_backend *b;

    if (!share) {
        return NULL;
    }
    b = g_new0(sl_qemu_backend, 1);
    b->id = g_strdup(id);
    b->mem_path = from_qemus_dir(q, g_steal_pointer(&mem));
    b->size = g_ascii_strtoull(size, NULL, 10);
    if (!ram) { /* a property since QEMU 8.2: absent before, so 0 */
        g_autofree char *off = qom_get(q, path, "offset", NULL);
        b->offset = off ? g_ascii_strtoull(off, NULL, 10) : 0;
    }
    b->share = parse_bool(share);
    b->anon = ram && !b->share;
    return b;
}

GPtrArray *sl_qemu_qmp_backends(sl_qmp *q, GError **errp)
{
    g_autoptr(JsonNode) r = sl_qmp_cmd(q, "qom-list", "{\"path\": \"/objects\"}", errp);
    GPtrArray *out;
    JsonArray *a;

    if (!r || !JSON_NODE_HOLDS_ARRAY(r)) {
        return NULL;
    }
    out = g_ptr_array_new_with_free_func((GDestroyNotify)sl_qemu_backend_free);
    a = json_node_get_array(r);
    for (guint i = 0; i < json_array_get_length(a); i++) {
        JsonObject *o = json_array_get_object_element(a, i);
        const char *type = json_object_get_string_member_with_default(o, "type", "");
        bool ram = !strcmp(type, "child<memory-backend-ram>");
        sl_qemu_backend *b;
        if (!ram && strcmp(type, "child<memory-backend-file>")) {
            if (g_str_has_prefix(type, "child<memory-backend-")) {
                /* memfd, epc...: RAM in no file we can name, nor (shared) in the stream */
                g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' is a %.*s, "
                            "whose RAM this save cannot read: use memory-backend-file "
                            "(share=on, on /dev/shm or hugetlbfs) or -ram, or --format qemu",
                            json_object_get_string_member(o, "name"),
                            (int)strlen(type) - 7, type + 6);
                g_ptr_array_unref(out);
                return NULL;
            }
            continue;
        }
        b = backend_over_qmp(q, json_object_get_string_member(o, "name"), ram, errp);
        if (!b) {
            g_ptr_array_unref(out);
            return NULL;
        }
        g_ptr_array_add(out, b);
    }
    return out;
}

/* Checks @b's file system; sets *@hugepage to its page size on hugetlbfs,
 * 0 on tmpfs. */
static bool backend_fs(const sl_qemu_backend *b, uint64_t *hugepage, GError **errp)
{
    g_autofree char *dir = g_path_get_dirname(b->mem_path);
    struct statfs sfs;

    *hugepage = 0;
    if (statfs(dir, &sfs) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "memory backend '%s': %s: %s", b->id, dir,
                    g_strerror(errno));
        return false;
    }
    if ((unsigned long)sfs.f_type == TMPFS_MAGIC) {
        return true;
    }
    if ((unsigned long)sfs.f_type != HUGETLBFS_MAGIC) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': %s is neither "
                    "on tmpfs nor on hugetlbfs", b->id, b->mem_path);
        return false;
    }
    if (b->size % (uint64_t)sfs.f_bsize) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': size %" G_GUINT64_FORMAT
                    " is not a multiple of the hugepage size %ld", b->id, b->size,
                    (long)sfs.f_bsize);
        return false;
    }
    *hugepage = (uint64_t)sfs.f_bsize;
    return true;
}

/*
 * Takes the restore's lock on the memory file open at @fd: an exclusive
 * flock held (by the fd staying open) as long as the restore runs, so that
 * a second restore naming the same file is refused instead of replacing
 * or rewriting the RAM of a guest that runs.
 */
static bool lock_file(const sl_qemu_backend *b, int fd, GError **errp)
{
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
        return true;
    }
    if (errno == EWOULDBLOCK) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': %s is the guest "
                    "RAM of another restore that is still running: refusing to touch it",
                    b->id, b->mem_path);
    } else {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "memory backend '%s': locking %s: %s", b->id,
                    b->mem_path, g_strerror(errno));
    }
    return false;
}

/* Opens @b's existing file and locks it into @locks (nothing if there is none). */
static bool lock_existing(const sl_qemu_backend *b, GArray *locks, GError **errp)
{
    int fd = open(b->mem_path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        if (errno == ENOENT) {
            return true;
        }
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "memory backend '%s': %s: %s", b->id,
                    b->mem_path, g_strerror(errno));
        return false;
    }
    g_array_append_val(locks, fd);
    return lock_file(b, fd, errp);
}

/* Validates @b: share=on, a file (not a directory) on tmpfs or hugetlbfs. */
static bool check_backend(const sl_qemu_backend *b, uint64_t *hugepage, GError **errp)
{
    struct stat st;

    if (!b->share) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s' needs share=on: "
                    "without it guest RAM is private to QEMU, not in %s", b->id, b->mem_path);
        return false;
    }
    if (b->readonly) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': readonly=on is not "
                    "supported: the restore writes guest RAM into %s (nor can QEMU load RAM "
                    "into it); drop readonly=on", b->id, b->mem_path);
        return false;
    }
    if (b->offset) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': offset=%" G_GUINT64_FORMAT
                    " is not supported: the restore makes %s afresh with guest RAM from its "
                    "start; drop offset= (a file of its own per backend)", b->id, b->offset,
                    b->mem_path);
        return false;
    }
    if (stat(b->mem_path, &st) == 0 && S_ISDIR(st.st_mode)) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': mem-path %s is a "
                    "directory; name a file, so that the restore can find it", b->id, b->mem_path);
        return false;
    }
    return backend_fs(b, hugepage, errp);
}

/* Removes @b's old file (its hugepages go back to the pool). */
static bool drop_old_file(const sl_qemu_backend *b, GError **errp)
{
    if (unlink(b->mem_path) < 0 && errno != ENOENT) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "memory backend '%s': %s: %s", b->id,
                    b->mem_path, g_strerror(errno));
        return false;
    }
    return true;
}

void sl_qemu_unlock_files(GArray *fds)
{
    for (guint i = 0; i < fds->len; i++) {
        close(g_array_index(fds, int, i));
    }
    g_array_set_size(fds, 0);
}

/* The hugetlbfs pools must hold the pages of all backends together: two
 * files may each fit alone and not both. */
static bool check_pools(GPtrArray *bs, const uint64_t *hugepage, GError **errp)
{
    for (guint i = 0; i < bs->len; i++) {
        uint64_t pages = 0;
        bool first = true;
        for (guint j = 0; j < bs->len && hugepage[i]; j++) {
            first &= !(j < i && hugepage[j] == hugepage[i]);
            if (hugepage[j] == hugepage[i]) {
                pages += ((const sl_qemu_backend *)g_ptr_array_index(bs, j))->size / hugepage[i];
            }
        }
        if (hugepage[i] && first && !sl_hugetlb_check(hugepage[i], pages, errp)) {
            return false;
        }
    }
    return true;
}

/* Creates @b's file, empty, locked into @locks. */
static bool create_file(const sl_qemu_backend *b, GArray *locks, GError **errp)
{
    int fd = open(b->mem_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    if (fd < 0 || ftruncate(fd, (off_t)b->size) < 0) {
        g_set_error(errp, SL_ERROR, SL_ERROR_IO, "memory backend '%s': creating %s: %s", b->id,
                    b->mem_path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(b->mem_path);
        }
        return false;
    }
    g_array_append_val(locks, fd);
    return lock_file(b, fd, errp);
}

/*
 * A mem-path that is a symbolic link names the file it points to, as QEMU
 * opens it: @b's path becomes that file's, so that the restore makes (or
 * reuses) the target where it is, not a regular file in the link's place
 * on another file system (found by a user's test: a link in /dev/shm to a
 * hugetlbfs file was replaced by a tmpfs file).  A dangling link is refused.
 */
static bool follow_link(sl_qemu_backend *b, GError **errp)
{
    struct stat st;
    char *real;

    if (!b->mem_path || lstat(b->mem_path, &st) < 0 || !S_ISLNK(st.st_mode)) {
        return true;
    }
    real = realpath(b->mem_path, NULL);
    if (!real) {
        g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "memory backend '%s': mem-path %s is a "
                    "symbolic link that leads to no file (%s); name the file itself", b->id,
                    b->mem_path, g_strerror(errno));
        return false;
    }
    g_free(b->mem_path);
    b->mem_path = g_strdup(real);
    free(real);
    return true;
}

bool sl_qemu_fresh_files(GPtrArray *backends, GArray *locks, GError **errp)
{
    g_autofree uint64_t *hugepage = g_new0(uint64_t, backends->len + 1);
    g_autoptr(GArray) old = g_array_new(false, false, sizeof(int));
    bool ok = true;

    for (guint i = 0; ok && i < backends->len; i++) {
        ok = follow_link(g_ptr_array_index(backends, i), errp);
    }
    /* Every old file locked before any is removed: one in use refuses all. */
    for (guint i = 0; ok && i < backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(backends, i);
        ok = check_backend(b, &hugepage[i], errp) && lock_existing(b, old, errp);
    }
    for (guint i = 0; ok && i < backends->len; i++) {
        ok = drop_old_file(g_ptr_array_index(backends, i), errp);
    }
    sl_qemu_unlock_files(old);
    if (!ok || !check_pools(backends, hugepage, errp)) {
        return false;
    }
    for (guint i = 0; i < backends->len; i++) {
        if (!create_file(g_ptr_array_index(backends, i), locks, errp)) {
            return false;
        }
    }
    return true;
}

/* @b's file can be reused: a regular file of its size, where a fresh one would go. */
static bool reusable(const sl_qemu_backend *b)
{
    struct stat st;
    uint64_t hugepage;

    return b->mem_path && b->share && !b->offset && !b->readonly && stat(b->mem_path, &st) == 0 &&
           S_ISREG(st.st_mode) &&
           (uint64_t)st.st_size == b->size && backend_fs(b, &hugepage, NULL);
}

bool sl_qemu_reuse_files(GPtrArray *backends, GArray *locks, GError **errp)
{
    g_autoptr(GPtrArray) fresh = g_ptr_array_new();

    for (guint i = 0; i < backends->len; i++) {
        sl_qemu_backend *b = g_ptr_array_index(backends, i);
        if (!follow_link(b, errp)) {
            return false;
        }
        if (!b->mem_path) {
            g_set_error(errp, SL_ERROR, SL_ERROR_INVALID, "--reuse-ram: block '%s' is "
                        "anonymous memory, which a restarted QEMU gets afresh: use a "
                        "memory-backend-file on /dev/shm or hugetlbfs", b->id);
            return false;
        }
        if (!reusable(b)) {
            g_ptr_array_add(fresh, b);
        } else if (!lock_existing(b, locks, errp)) {
            return false;
        }
    }
    return sl_qemu_fresh_files(fresh, locks, errp);
}
