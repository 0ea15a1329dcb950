/* params.c — parameter sets: ordered, named tensors owned outside the scopes (a model's state,
 * an optimizer's state). Lookup is linear: sets hold tens to hundreds of tensors. */
#include "internal.h"

struct kiln_params {
  char **names;
  kiln_tensor **ts;
  int n, cap;
};

kiln_params *kiln_params_new(void) { return kn_xcalloc(1, sizeof(kiln_params)); }

void kiln_params_free(kiln_params *p) {
  if (!p) return;
  for (int i = 0; i < p->n; i++) {
    kiln_free(p->ts[i]);
    free(p->names[i]);
  }
  free(p->names);
  free(p->ts);
  free(p);
}

kiln_tensor *kiln_params_find(const kiln_params *p, const char *name) {
  if (!p || !name) return NULL;
  for (int i = 0; i < p->n; i++)
    if (!strcmp(p->names[i], name)) return p->ts[i];
  return NULL;
}

int kiln_params_add(kiln_params *p, const char *name, kiln_tensor *t) {
  if (!p || !name || !t) {
    kn_err("params_add: %s is NULL", !p ? "the set" : !name ? "the name" : "the tensor");
    return -1;
  }
  if (kiln_params_find(p, name)) {
    kn_err("params_add: duplicate name '%s'", name);
    return -1;
  }
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 16;
    p->names = kn_xrealloc(p->names, sizeof(char *) * p->cap);
    p->ts = kn_xrealloc(p->ts, sizeof(kiln_tensor *) * p->cap);
  }
  p->names[p->n] = strdup(name);
  p->ts[p->n++] = kiln_persist(t);
  return 0;
}

int kiln_params_count(const kiln_params *p) { return p ? p->n : 0; }
kiln_tensor *kiln_params_get(const kiln_params *p, int i) {
  return p && i >= 0 && i < p->n ? p->ts[i] : NULL;
}
const char *kiln_params_name(const kiln_params *p, int i) {
  return p && i >= 0 && i < p->n ? p->names[i] : NULL;
}
