/* fg_policy_eval.c - a compiled policy applied to one call; see fg_policy_eval.h. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "fg_error.h"
#include "fg_policy_eval.h"
#include "fg_tz.h"

/* Per-call counters a message edit can touch at most: the stats of one
 * program are few (one per path in the policy, capped at compile time). */
#define EVAL_MAX_STATS 4096

const struct fg_policy_method *fg_policy_find_method(const struct fg_policy *p, const char *path, size_t len)
{
	size_t lo = 0, hi = p->nmethods;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *mp = p->methods[mid].path;
		int cmp = strncmp(mp, path, len);
		if (cmp == 0 && mp[len] != '\0')
			cmp = 1;
		if (cmp == 0)
			return &p->methods[mid];
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The bytes of a gRPC path's parts: letters, digits and "_.-" (a table:
 * every call under a policy, pass-through ones too, is checked). */
static const unsigned char path_part[256] = {
	['-'] = 1, ['.'] = 1, ['_'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
	['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
	['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

int fg_policy_grpc_path(const char *path, size_t len)
{
	const unsigned char *p = (const unsigned char *)path, *end = p + len;
	int parts;

	for (parts = 0; p < end; parts++) {
		if (*p++ != '/' || p == end || *p == '.')
			return 0;
		for (; p < end && *p != '/'; p++)
			if (!path_part[*p])
				return 0;
	}
	return parts == 2;
}

size_t fg_policy_band(const struct fg_policy *p, const char *v, size_t len, enum fg_policy_unknown_reason *why)
{
	size_t b, i;

	if (!v || len == 0) {
		if (why)
			*why = FG_POLICY_U_ABSENT;
		return p->unknown_band;
	}
	for (b = 0; b < p->nbands; b++)
		for (i = 0; i < p->bands[b].nmatch; i++)
			if (p->bands[b].match_len[i] == len && memcmp(p->bands[b].match[i], v, len) == 0)
				return b;
	if (why)
		*why = FG_POLICY_U_UNMATCHED;
	return p->unknown_band;
}

int fg_policy_read_field(const struct fg_policy_source *s, const uint8_t *msg, size_t len, char *buf,
                         size_t buflen)
{
	struct fg_pbwire_field f;
	const uint8_t *v;
	uint64_t x;
	int rc, n;

	rc = fg_pbwire_find(msg, len, s->path, s->depth, &f, NULL);
	if (rc == FG_ENOTFOUND)
		return 0;
	if (rc < 0)
		return FG_EINVAL;
	if (s->value == FG_POLICY_V_STRING) {
		if (f.wire_type != FG_PBWIRE_LEN || f.vlen + 1 > buflen)
			return FG_EINVAL;
		memcpy(buf, f.value, f.vlen);
		buf[f.vlen] = '\0';
		return (int)f.vlen;
	}
	v = f.value;
	if (f.wire_type != FG_PBWIRE_VARINT || fg_pbwire_read_varint(&v, f.value + f.vlen, &x) < 0)
		return FG_EINVAL;
	/* Read the value as the receiver will, so a padded varint cannot name
	 * another user or band to feedguard than to the server. */
	if (s->bits32)
		x = (uint32_t)x;
	if (s->sint)
		x = (x >> 1) ^ (~(x & 1) + 1);
	if (s->is_unsigned)
		n = snprintf(buf, buflen, "%llu", (unsigned long long)x);
	else if (s->bits32)
		n = snprintf(buf, buflen, "%ld", (long)(int32_t)(uint32_t)x);
	else
		n = snprintf(buf, buflen, "%lld", (long long)x);
	return n > 0 && (size_t)n < buflen ? n : FG_EINVAL;
}

static void add_stats(const struct fg_policy *p, size_t band, size_t slot, const uint64_t *stats)
{
	uint64_t *row = p->counters.stripped + slot * p->nstats * p->nbands;
	size_t i;

	for (i = 0; i < p->nstats; i++)
		if (stats[i])
			__atomic_fetch_add(&row[i * p->nbands + band], stats[i], __ATOMIC_RELAXED);
}

/* Saturating: a record's count never wraps to a small number. */
static void add_tally(const struct fg_policy *p, const uint64_t *stats, uint32_t *tally)
{
	size_t i;

	for (i = 0; i < p->nstats; i++)
		if (stats[i])
			tally[i] = stats[i] >= UINT32_MAX - tally[i] ? UINT32_MAX : tally[i] + (uint32_t)stats[i];
}

int fg_policy_edit(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band, size_t slot,
                   const uint8_t *msg, size_t len, struct fg_bufq *out, int *changed, const char **why)
{
	return fg_policy_edit_call(p, e, band, slot, NULL, msg, len, out, changed, why);
}

int fg_policy_edit_call(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band, size_t slot,
                        const char *user_key, const uint8_t *msg, size_t len, struct fg_bufq *out, int *changed,
                        const char **why)
{
	return fg_policy_edit_tally(p, e, band, slot, user_key, msg, len, out, changed, why, NULL);
}

int fg_policy_edit_tally(const struct fg_policy *p, const struct fg_policy_edit *e, size_t band, size_t slot,
                         const char *user_key, const uint8_t *msg, size_t len, struct fg_bufq *out, int *changed,
                         const char **why, uint32_t *tally)
{
	struct fg_pbwire_value values[FG_POLICY_NVALUES] = { { NULL, 0 } };
	struct fg_pbwire_ctx ctx = { values, FG_POLICY_NVALUES };
	uint64_t stats[EVAL_MAX_STATS];
	int rc;

	*changed = 0;
	if (!e || !e->prog)
		return fg_bufq_append(out, msg, len);
	/* No key: the value stays NULL, so REPLACE drops the field. */
	if (user_key && user_key[0]) {
		values[FG_POLICY_VALUE_USER_KEY].data = (const uint8_t *)user_key;
		values[FG_POLICY_VALUE_USER_KEY].len = strlen(user_key);
	}
	memset(stats, 0, p->nstats * sizeof(stats[0]));
	rc = fg_pbwire_edit_ex(msg, len, e->prog, &ctx, out, stats, p->nstats, changed, why);
	if (rc == 0 && *changed && slot < p->counters.nslots)
		add_stats(p, band, slot, stats);
	if (rc == 0 && *changed && tally)
		add_tally(p, stats, tally);
	return rc;
}

const struct fg_tz *fg_policy_zone(const struct fg_policy *p, const char *v, size_t len)
{
	size_t i;

	for (i = 0; v && i < p->nzones; i++)
		if (strlen(fg_tz_name(p->zones[i])) == len && memcmp(fg_tz_name(p->zones[i]), v, len) == 0)
			return p->zones[i];
	return p->tz;
}

void fg_policy_count_call(const struct fg_policy *p, const struct fg_policy_method *m, size_t band, size_t slot)
{
	if (slot < p->counters.nslots)
		__atomic_fetch_add(&p->counters.calls[(slot * p->nmethods + m->index) * p->nbands + band], 1,
		                   __ATOMIC_RELAXED);
}

void fg_policy_count_unknown(const struct fg_policy *p, const struct fg_policy_method *m,
                             enum fg_policy_unknown_reason why, size_t slot)
{
	if (slot < p->counters.nslots && p->counters.unknown_band)
		__atomic_fetch_add(&p->counters.unknown_band[(slot * p->nmethods + m->index) * FG_POLICY_NUNKNOWN + why], 1,
		                   __ATOMIC_RELAXED);
}

int fg_policy_need_user(const struct fg_policy_method *m, size_t nbands, int band_known, size_t band)
{
	size_t b;

	if (band_known)
		return band < nbands && m->request[band].need_user;
	for (b = 0; b < nbands; b++)
		if (m->request[b].need_user)
			return 1;
	return 0;
}
