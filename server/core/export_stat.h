/* export_stat: the long format's tables as SPSS (.sav) or Stata (.dta)
 * data files, written with ReadStat: one file per table (records.sav,
 * victims.sav, ...; an SPSS or Stata file holds one dataset, and an
 * analyst merges them on record_id / instance_id) and codebook.csv, in one
 * folder.
 *
 * Typed as export_table.h has it. A choice is a number with value labels
 * (the label of each of the form's choices): the code itself when every
 * code is a decimal number (counties: 42 = Kisumu), else its position in
 * the form's list from 1; codebook.csv gives number, code and label. Yes/no
 * is 0/1 labelled No/Yes. Dates and date-times are the format's own (SPSS
 * DATE11 and DATETIME23, seconds since 1582-10-14; Stata %td and %tc).
 * Empty numbers are system-missing (.), empty text "". Variable labels are
 * the form's field labels. Text is UTF-8 (Stata 14+ format 118; SPSS with
 * its UTF-8 character set record).
 *
 * Variable names: the CSV column's name made valid for the format
 * (export_stat_name): characters other than letters, digits and _
 * become _, a name not starting with a letter gets a "v" before it, names
 * are cut to 32 bytes (Stata) or 64 (SPSS), a reserved word (and, for
 * Stata, "yesno": the yes/no value label's name) gets a "_" after it, and a name equal to an earlier one (case aside) ends in _2,
 * _3, ... codebook.csv lists column and variable side by side.
 *
 * Both formats need the number of rows and each text column's width
 * before the first row: a first pass spools the typed rows into unlinked
 * files in tmpdir (private, like the store) and a second writes each
 * table from its spool, so memory stays flat -- except Stata texts longer
 * than 2045 bytes (narratives), which ReadStat keeps in memory until the
 * file's end (strL).
 */
#ifndef SHAHIDI_EXPORT_STAT_H
#define SHAHIDI_EXPORT_STAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export.h"

struct store;

/* Writes dir/TABLE.sav (o->format EXPORT_SAV) or .dta (EXPORT_DTA), one per
 * table, and dir/codebook.csv, each mode 0600. dir must exist. 0 or a
 * negative errno with err filled (the file being written is removed; no
 * codebook.csv then); *ret_records: the records written. */
int export_stat_write(const struct form_registry *forms, const struct export_opts *o,
		      struct store *s, const char *dir, const char *tmpdir,
		      uint64_t *ret_records, char *err, size_t errlen);

/* The same files as one zip archive (deflated), for a download: each
 * written to an unlinked file in tmpdir (nothing is left there, even by a
 * crash) and deflated into another. *ret_fd: the archive, open for
 * reading at its start (the caller closes it). */
int export_stat_zip(const struct form_registry *forms, const struct export_opts *o,
		    struct store *s, const char *tmpdir, int *ret_fd, uint64_t *ret_records,
		    char *err, size_t errlen);

/* A column name made a valid, new variable name of format f into out
 * (65 bytes): used holds the n names given so far. */
void export_stat_name(enum export_format f, const char *name, char *const *used, size_t n,
		      char out[65]);

#endif
