/* cli.h — what the kiln command's files share: the subcommand table type, exit codes and
 * flag parsing helpers (defined in kiln.c), and the subcommands defined in other files. */
#ifndef KILN_CLI_H
#define KILN_CLI_H

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

/* serve.c */
int cmd_serve(int argc, char **argv);

#endif
