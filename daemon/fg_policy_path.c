/*
 * fg_policy_path.c - field paths as a policy writes them
 * ("signals.features[\"k\"]", "m[*].x"), split into their components.
 * Syntax only: what each name means is fg_schema's business, asked by the
 * callers.
 */
#include "config.h"

#include <string.h>

#include "fg_policy_compile-internal.h"

static int parse_part(const char **s, struct fg_policy_path_part *pp)
{
	size_t n = 0;

	memset(pp, 0, sizeof(*pp));
	while (**s && **s != '.' && **s != '[') {
		char ch = **s;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
			return -1;
		if (n + 1 >= sizeof(pp->name))
			return -1;
		pp->name[n++] = ch;
		(*s)++;
	}
	if (n == 0)
		return -1;
	if (**s != '[')
		return 0;
	(*s)++;
	if (**s == '*') {
		pp->sel = 1;
		(*s)++;
	} else {
		char quote = (**s == '"' || **s == '\'') ? **s : 0;
		pp->sel = 2;
		if (quote)
			(*s)++;
		while (**s && (quote ? **s != quote : **s != ']')) {
			if (pp->keylen + 1 >= sizeof(pp->key))
				return -1;
			pp->key[pp->keylen++] = *(*s)++;
		}
		if (quote) {
			if (**s != quote)
				return -1;
			(*s)++;
		}
	}
	if (**s != ']')
		return -1;
	(*s)++;
	return 0;
}

int fg_policy_path_split(const char *text, struct fg_policy_path_part *parts, size_t max)
{
	const char *s = text;
	size_t n = 0;

	for (;;) {
		if (n == max || parse_part(&s, &parts[n]) < 0)
			return -1;
		n++;
		if (*s == '\0')
			return (int)n;
		if (*s != '.')
			return -1;
		s++;
	}
}

