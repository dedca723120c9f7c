/*
 * fg_policy-t.h - types of a compiled policy: who the user is, which age
 * band applies, and per band the wire-editing programs for the requests
 * and responses of each intercepted method.
 *
 * Built once by fg_policy_compile_load() from a YAML policy and the platform's
 * descriptor set; immutable afterwards and shared read-only by every
 * worker, except for the counters, which each worker bumps in its own slot.
 */
#ifndef FG_POLICY_T_H
#define FG_POLICY_T_H

#include <stddef.h>
#include <stdint.h>

#include "fg_items.h"
#include "fg_pbwire-t.h"

#define FG_POLICY_MAX_PATH 32       /* field numbers in one field path */
#define FG_POLICY_MAX_BANDS 16
#define FG_POLICY_MAX_WORKERS 1024  /* counter slots (one per worker) */

/* Where a per-call value (user id, age band) is read from. */
enum fg_policy_src_kind {
	FG_POLICY_SRC_NONE = 0,     /* not configured */
	FG_POLICY_SRC_HEADER,       /* a request metadata header */
	FG_POLICY_SRC_FIELD,        /* a field of the request message */
};

enum fg_policy_value_kind {
	FG_POLICY_V_STRING = 0,     /* string or bytes field (or a header) */
	FG_POLICY_V_INTEGER,        /* an integer or enum field, matched as decimal text */
};

struct fg_policy_source {
	enum fg_policy_src_kind kind;
	char *header;                       /* HEADER: lowercase metadata name */
	uint32_t path[FG_POLICY_MAX_PATH];  /* FIELD: field numbers from the request root */
	size_t depth;
	enum fg_policy_value_kind value;    /* FIELD: how to read the value */
	uint8_t sint;                       /* FIELD: zigzag-encoded integer (sint32/sint64) */
	uint8_t bits32;                     /* FIELD: a 32-bit type: only the varint's low 32 bits
	                                       count, as the receiver's parser truncates */
	uint8_t is_unsigned;                /* FIELD: uint32/uint64: decimal without a sign */
};

/* Values a band's match list may hold: every call whose band value
 * matches none is compared with all of them (a client chooses that
 * value), and 100,000 took 1.45 ms a call and 12 s to load. */
#define FG_POLICY_MAX_MATCH 32

struct fg_policy_band {
	char *name;                 /* as the policy names it; also the metrics label */
	char **match;               /* values (header or field) that select this band */
	size_t *match_len;          /* their lengths */
	size_t nmatch;
};

/* The per-call values a program's REPLACE rules put in: the index of each
 * in the struct fg_pbwire_ctx that fg_policy_edit_call() builds. */
enum fg_policy_value {
	FG_POLICY_VALUE_USER_KEY = 0,   /* the call's pseudonymous user key (pseudonymize) */
	FG_POLICY_NVALUES
};

/* What happens to one direction of a call for one band. */
struct fg_policy_edit {
	const struct fg_pbwire_msg *prog;   /* NULL: the message passes unedited */
	char **remove_headers;              /* request metadata removed (lowercase), request side only */
	size_t nremove_headers;
	unsigned need_user;                 /* <prog> pseudonymizes: the call needs its user key */
};

/* Harm-class categories (Online Safety Act 2023 ss.60-62). */
enum fg_policy_category {
	FG_POLICY_CAT_PRIMARY_PRIORITY = 0,
	FG_POLICY_CAT_PRIORITY,
	FG_POLICY_CAT_NON_DESIGNATED,
	FG_POLICY_NCATEGORIES,
};

/* feedguard's built-in classes, then the policy's own; the index is the
 * class's bit in the item editor's masks. */
#define FG_POLICY_MAX_CLASSES 48

struct fg_policy_class {
	char *name;
	uint8_t category;                   /* enum fg_policy_category */
};

/* Where a method's feed items and labels are ("feed"). */
struct fg_policy_feed {
	struct fg_items_spec spec;
	uint32_t page_size_path[FG_ITEMS_MAX_PATH]; /* request integer field; depth 0: none */
	size_t page_size_depth;
	uint64_t default_page_size;         /* a request without page_size asks for this (0: unknown) */
	uint8_t page_size_signed;           /* int32/int64: a negative value is no size */
	char *report_header;                /* NULL: no counts header */
};

/* One band's filter ("filter" rule block). */
struct fg_policy_filter {
	unsigned active;                    /* 0: the band has no filter block */
	unsigned limited;                   /* the band has exposure counters: items are scanned
	                                       (with pass-all rules when not <active>) */
	struct fg_items_rules rules;
	double overfetch;                   /* > 1: page_size raised by this factor */
	uint64_t overfetch_max;
};

/* Actions counted per class by the filter. */
enum fg_policy_filter_action {
	FG_POLICY_FILTER_REMOVED = 0,
	FG_POLICY_FILTER_DEMOTED,
	FG_POLICY_FILTER_SURPLUS,
	FG_POLICY_FILTER_LIMITED,           /* over an exposure counter's allowance */
	FG_POLICY_FILTER_NACTIONS,
};

/* What happens when a screen-time rule fires (README, "Actions"). */
enum fg_policy_action {
	FG_POLICY_ACT_NONE = 0,             /* nothing fired */
	FG_POLICY_ACT_NOTICE,               /* served, with the notice */
	FG_POLICY_ACT_EMPTY,                /* an empty feed with the notice */
	FG_POLICY_ACT_DENY,                 /* RESOURCE_EXHAUSTED (UNAVAILABLE for a fail mode) */
};

/* A band's fail mode: what it gets when its state cannot be read. */
enum fg_policy_fail_mode {
	FG_POLICY_FAIL_OPEN = 0,
	FG_POLICY_FAIL_EMPTY,
	FG_POLICY_FAIL_DENY,
};

/* Notices, strongest first: the order of feedguard-notice. */
enum fg_policy_notice {
	FG_POLICY_N_DAILY_LIMIT = 0,
	FG_POLICY_N_QUIET_HOURS,
	FG_POLICY_N_TAKE_A_BREAK,
	FG_POLICY_N_EXPOSURE_LIMIT,
	FG_POLICY_N_DAILY_LIMIT_SOON,
	FG_POLICY_N_QUIET_HOURS_SOON,
	FG_POLICY_NNOTICES,
};

/* The rules that answer a call (counters of empty and deny answers). */
enum fg_policy_rule {
	FG_POLICY_R_DAILY = 0,
	FG_POLICY_R_QUIET,
	FG_POLICY_R_BREAK,
	FG_POLICY_R_FAIL,                   /* the fail mode: the state could not be read */
	FG_POLICY_NRULES,
};

/* Why a band's state could not be read or written. */
enum fg_policy_state_reason {
	FG_POLICY_S_TIMEOUT = 0,
	FG_POLICY_S_DOWN,
	FG_POLICY_S_BUSY,
	FG_POLICY_S_ERROR,
	FG_POLICY_S_NO_USER,
	FG_POLICY_NSREASONS,
};

/* Why a call's band is the unknown_band though no band chose it. */
enum fg_policy_unknown_reason {
	FG_POLICY_U_ABSENT = 0,             /* no value: missing, empty, a header sent twice, a field
	                                       that does not read */
	FG_POLICY_U_UNMATCHED,              /* a value no band's match lists */
	FG_POLICY_NUNKNOWN,
};

/* What was done about it: a fail mode, or a lost update. */
#define FG_POLICY_S_UPDATE 3
#define FG_POLICY_NSMODES 4

/* Exposure counters per band ("exposure" entries); each is a bit of an
 * item's counter mask (fg_items). */
#define FG_POLICY_MAX_COUNTERS 16

/* One band's screen-time rules ("limits" block); times in milliseconds,
 * wall times in seconds after local midnight. */
struct fg_policy_limits {
	unsigned active;                    /* 0: the band is not limited */
	int64_t idle_gap_ms;
	int64_t daily_cap_ms;               /* 0: daily off */
	int64_t daily_warn_ms;
	uint8_t daily_action;               /* enum fg_policy_action */
	int64_t break_after_ms;             /* 0: break off */
	uint8_t break_action;
	unsigned quiet_on;
	int32_t quiet_from_s, quiet_to_s;   /* from > to: the night spans midnight */
	int64_t quiet_allowance_ms;
	int64_t quiet_warn_ms;
	uint8_t quiet_action;
	uint8_t fail_mode;                  /* enum fg_policy_fail_mode */
	size_t ncounters;
	char *counter_name[FG_POLICY_MAX_COUNTERS];     /* the Redis field is "x:<name>" */
	uint64_t counter_classes[FG_POLICY_MAX_COUNTERS];
	uint32_t per_day[FG_POLICY_MAX_COUNTERS];
};

struct fg_tz;

struct fg_policy_method {
	char *path;                         /* "/pkg.Service/Method" */
	unsigned client_streaming;
	unsigned server_streaming;
	struct fg_policy_source user_id;
	struct fg_policy_source age_band;
	struct fg_policy_edit *request;     /* [nbands] */
	struct fg_policy_edit *response;    /* [nbands] */
	const struct fg_policy_feed *feed;  /* NULL: the method has no feed to filter */
	struct fg_policy_filter *filter;    /* [nbands] when <feed> is set */
	size_t feed_index;                  /* <feed> set: position among the methods with one, for
	                                       the filter's counters */
	struct fg_policy_source time_zone;  /* where the user's zone is read (string); NONE: the policy's */
	unsigned screen_time;               /* calls are heartbeats of the bands' limits */
	struct fg_policy_edit capture_request;  /* what a capture removes from every band's captured
	                                       requests (capture_redact.request, or the first
	                                       band's request rules), the user id field included */
	struct fg_policy_edit capture_response; /* ... and responses (capture_redact.response, or
	                                       the first band's response rules) */
	unsigned capture_response_default;  /* capture_response is the first band's response block:
	                                       a band with that same block needs it not again */
	size_t index;                       /* position in fg_policy.methods, for counters */
};

/*
 * Counters: one slot per worker so no two threads write one cache line;
 * the admin endpoint sums the slots.  Shapes depend on the policy, so a
 * reload that changes the policy starts them from zero (a counter reset,
 * which Prometheus expects).
 */
struct fg_policy_counters {
	uint64_t *calls;            /* [slot][method][band] intercepted calls */
	uint64_t *unknown_band;     /* [slot][method][FG_POLICY_NUNKNOWN] calls put in the
	                               unknown_band because no band matched: no value, or a
	                               value no band lists */
	uint64_t *stripped;         /* [slot][stat][band] fields removed or changed */
	uint64_t *filtered;         /* [slot][feed][band][class + 1][action] items; class
	                               nclasses is "unlabelled" */
	uint64_t *pages;            /* [slot][feed][band][2] pages filtered, pages unmet */
	uint64_t *notices;          /* [slot][band][kind] screen-time notices given */
	uint64_t *answered;         /* [slot][band][rule][action] calls answered empty or deny */
	uint64_t *state_failures;   /* [slot][band][reason][mode] */
	size_t nslots;
};

/* Hex digits of a policy's id (128 bits: enough to tell versions apart,
 * short enough to carry in every captured call). */
#define FG_POLICY_ID_LEN 32

struct fg_policy {
	char *file;                         /* absolute path of the policy file */
	char id[FG_POLICY_ID_LEN + 1];      /* what the policy decides from, as FG_POLICY_ID_LEN
	                                       hex digits: the first half of the SHA-256 of the
	                                       policy's bytes followed by the SHA-256 of its
	                                       descriptor set's bytes.  Captured calls carry it,
	                                       so replay knows which policy decided each */
	char *descriptor_set;               /* absolute path of its descriptor set (for the tools) */
	char **set_methods;                 /* every method path of the descriptor set, sorted: the
	                                       config's metrics.methods are checked against them */
	size_t nset_methods;
	struct fg_policy_band *bands;       /* most protective first */
	size_t nbands;
	size_t unknown_band;                /* band for a missing, unknown or malformed value */
	struct fg_policy_method *methods;   /* sorted by <path> */
	size_t nmethods;
	struct fg_policy_class *classes;    /* built-in first */
	size_t nclasses;
	size_t nfeeds;                      /* methods with a feed */
	char **stat_names;                  /* "request:signals.watch_history" per pbwire stat index */
	size_t nstats;
	struct fg_policy_limits *limits;    /* [nbands]; NULL: no band is limited */
	struct fg_tz *tz;                   /* time_zone (default UTC) */
	struct fg_tz **zones;               /* time_zones: zones a request may name */
	size_t nzones;
	char *need_state_at;                /* "file:line:column" of "limits" when a band is limited:
	                                       the config must have state and pseudonym_keys */
	struct fg_policy_counters counters;
	char *need_keys_at;                 /* "file:line:column" of the first rule that needs
	                                       pseudonym_keys in the config (pseudonymize);
	                                       NULL: none does */
	void *arena;                        /* owns the programs' nodes and rules; private */
};

#endif /* FG_POLICY_T_H */
