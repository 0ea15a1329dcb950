/* cli.h — what the kiln command's files share: the subcommand table type, exit codes and
 * flag parsing helpers (defined in kiln.c), and the subcommands defined in other files. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

#include "kiln.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef int (*command_fn)(int argc, char **argv); /* argv[0] is the command's own name */
typedef struct {
  const char *name;
  command_fn fn;
  const char *usage; /* arguments, after the name */
  const char *help;  /* one line */
} command;

int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int runtime_error(const char *what);
/* `--name value` or `--name=value`: returns the value and advances *i, or NULL when argv[*i]
 * is not this flag; a flag without its value sets *missing. */
const char *flag_value(int argc, char **argv, int *i, const char *name, int *missing);
int parse_int(const char *s, long lo, long hi, long *out); /* 0 on success */
double now_seconds(void);
double median(double *v, int n); /* sorts v */

/* train.c */
int cmd_train(int argc, char **argv);
int bench_train(int argc, char **argv);
extern const char bench_train_usage[];

/* info.c */
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
/* llm.c */
int cmd_generate(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int bench_llm(int argc, char **argv);
extern const char generate_usage[], chat_usage[], bench_llm_usage[];
const char *default_model(void); /* the fetched SmolLM2, or NULL */
/* A sampling flag at argv[*i] (--temp, --top-k, --top-p, --min-p, --repeat-penalty,
 * --repeat-last-n, --frequency-penalty, --presence-penalty, and --seed when seed) into sp:
 * -1 when one was read (*i advanced), 0 when argv[*i] is none of them, else 1 + an exit code
 * (a usage error, printed). */
int sampling_flag(const char *cmd, int argc, char **argv, int *i, bool seed,
                  kiln_sampler_params *sp);

/* serve.c */
int cmd_serve(int argc, char **argv);

#endif
