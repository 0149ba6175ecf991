/* export: quoting for CSV and JSON (export.h), apart from export.c so that
 * each file stays readable. */
#include "export.h"

int export_csv_field(struct buf *out, const uint8_t *s, size_t n)
{
	bool quote = n && (s[0] == ' ' || s[n - 1] == ' ');
	for (size_t i = 0; i < n && !quote; i++)
		quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
	if (!quote)
		return buf_append(out, s, n);
	int r = buf_reserve(out, n * 2 + 2);
	if (r < 0)
		return r;
	uint8_t *p = out->data + out->len;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			*p++ = '"';
		*p++ = s[i];
	}
	*p++ = '"';
	out->len = (size_t)(p - out->data);
	return 0;
}

int export_json_string(struct buf *out, const uint8_t *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	int r = buf_reserve(out, n * 6 + 2);
	if (r < 0)
		return r;
	uint8_t *p = out->data + out->len;
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = c;
		} else if (c < 0x20) {
			*p++ = '\\';
			switch (c) {
			case '\n': *p++ = 'n'; break;
			case '\r': *p++ = 'r'; break;
			case '\t': *p++ = 't'; break;
			default:
				*p++ = 'u';
				*p++ = '0';
				*p++ = '0';
				*p++ = (uint8_t)hex[c >> 4];
				*p++ = (uint8_t)hex[c & 15];
			}
		} else {
			*p++ = c;
		}
	}
	*p++ = '"';
	out->len = (size_t)(p - out->data);
	return 0;
}


const char *const export_geo_parts[4] = {"latitude", "longitude", "altitude", "accuracy"};

int export_geo_csv(const uint8_t *v, size_t n, struct buf *out)
{
	struct form_value fv;
	struct form_geopoint g;
	if (!v || form_value_parse(v, n, &fv) < 0 || fv.kind != FT_GEOPOINT ||
	    form_value_geopoint(&fv, &g) < 0)
		return buf_append(out, ",,,,", 4);
	/* %.15g: the shortest text that reads back as the double for the
	 * coordinates phones send (-1.2921, not -1.29210000000000003) */
	return buf_printf(out, ",%.15g,%.15g,%.15g,%.15g", g.latitude, g.longitude, g.altitude,
			  g.accuracy);
}
