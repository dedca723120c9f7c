/*
 * fg_stage_record.h - how stages tell the capture stage what they decided
 * on a call it records: the fields strip removed, the fate of every item
 * the filter saw, what the gate decided.  A stage reports only when
 * <call->rec> is set (the capture stage runs on the call and sampled it);
 * the record is the capture stage's (fg_stage_capture.c), which turns the
 * reports into the capture format's Decisions (proto/.../capture.proto).
 *
 * Reports never fail the call: a report that finds no memory, or a record
 * over its budget, is left out of the record (which says so).  Loop thread
 * of the call's worker only.
 */
#ifndef FG_STAGE_RECORD_H
#define FG_STAGE_RECORD_H

#include <stddef.h>
#include <stdint.h>

struct fg_hdrs;
struct fg_items_page;
struct fg_stage_record;

/*
 * fg_stage_record_tally - the record's per-stat counts (the policy's
 * <nstats> counters, fg_policy.stat_names) for fg_policy_edit_tally() to
 * add to; NULL when no memory (the counts are then left out).
 */
uint32_t *fg_stage_record_tally(struct fg_stage_record *r);

/*
 * fg_stage_record_page - the fate of every item of filtered page <pg>
 * (scanned and planned: its <fate>s and <order> set), response message
 * <message> of the call.
 */
void fg_stage_record_page(struct fg_stage_record *r, unsigned message, const struct fg_items_page *pg);

/* fg_stage_record_page_size - the filter over-fetched: the client asked
 * for <asked> items a page (the forwarded request holds more). */
void fg_stage_record_page_size(struct fg_stage_record *r, uint64_t asked);

/* fg_stage_record_answer_metadata - the response metadata <h> of an answer
 * feedguard gives itself (fg_pipeline_answer), which no hook sees. */
void fg_stage_record_answer_metadata(struct fg_stage_record *r, const struct fg_hdrs *h);

/* What the gate decided, as of its last report (each replaces the last). */
struct fg_stage_screen_facts {
	unsigned action;            /* enum fg_policy_action the call got (NONE, NOTICE, EMPTY, DENY) */
	unsigned notices;           /* bit (1 << enum fg_policy_notice) per notice told */
	int64_t used_ms, left_ms, session_ms; /* as in feedguard-screen-time; left -1: no daily cap */
	const char *zone;           /* the zone's name (borrowed for the report) */
	int failure;                /* enum fg_policy_state_reason when the state was not read, else -1 */
	unsigned fail_mode;         /* enum fg_policy_fail_mode, with <failure> */
	const uint32_t *allowance;  /* per exposure counter, before the call; NULL: none */
	const char *const *counter; /* their names */
	size_t ncounters;
};

/* fg_stage_record_screen - the gate's decision <f> (copied). */
void fg_stage_record_screen(struct fg_stage_record *r, const struct fg_stage_screen_facts *f);

/* fg_stage_record_counted - the call's length <ms> (from its start) that
 * the account wrote to the state, so replay counts the same. */
void fg_stage_record_counted(struct fg_stage_record *r, int64_t ms);

#endif /* FG_STAGE_RECORD_H */
