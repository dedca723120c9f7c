/*
 * fuzz_config.c - libFuzzer target for the config parser.
 *
 * Besides "no crash, no leak" (ASan/LSan/UBSan do that part), it checks the
 * promises of fg_config.h that a fuzzer can see: a failure leaves no
 * snapshot and writes "name:line:column: message" on one printable line
 * (values are quoted back into it, so a hostile file must not be able to
 * forge log lines), and a success gives a snapshot that agrees with itself.
 *
 * Build and run: FG_BUILD_DIR=<build dir> tests/fuzz/run.sh 60 config.  By
 * hand (the config compiles its policy, so the policy compiler comes too):
 *   clang -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -Idaemon -I<build> -I<build>/daemon \
 *     tests/fuzz/fuzz_config.c daemon/fg_config*.c daemon/fg_units.c daemon/fg_yaml.c daemon/fg_cpu.c \
 *     daemon/fg_keyring.c daemon/fg_policy_*.c daemon/fg_pbwire.c daemon/fg_schema.c \
 *     <build>/daemon/descriptor.pb-c.c -lyaml -lprotobuf-c -lcrypto -lm
 * Run:   ./fuzz_config -max_total_time=60 new_corpus_dir tests/fuzz/corpus/config
 * (new inputs go to the first directory; keep the checked-in seeds small).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fg_config.h"
#include "fg_error.h"
#include "fuzz_common.h"

#define NAME "fuzz.yaml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_snapshot(struct fg_config *cfg)
{
	char err[FG_CONFIG_ERRLEN];

	if (cfg->refcount != 1 || cfg->nlisten < 1 || cfg->nlisten > FG_CONFIG_MAX_LISTEN)
		abort();
	if (fg_config_reload_check(cfg, cfg, err, sizeof(err)) != 0 || err[0] != '\0')
		abort();
	if (fg_config_ref(cfg) != cfg)
		abort();
	fg_config_unref(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[FG_CONFIG_ERRLEN];
	struct fg_config *cfg = NULL;
	int rc;

	memset(err, 'x', sizeof(err));
	rc = fg_config_load_string(NAME, "/etc/feedguard", (const char *)data, size, &cfg, err,
	                           sizeof(err));
	if (memchr(err, '\0', sizeof(err)) == NULL)
		abort();
	if (rc == 0) {
		if (!cfg || err[0] != '\0')
			abort();
		check_snapshot(cfg);
		fg_config_unref(cfg);
		return 0;
	}
	if (cfg)
		abort();
	fuzz_check_load_failure(rc, err, NAME);
	return 0;
}
