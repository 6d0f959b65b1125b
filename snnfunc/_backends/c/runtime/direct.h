/*! snnfunc's C runtime: Rows read and written in place (float32, float64, bfloat16).
    Pasted into every generated kernel source after this comment (see skeleton.py). */

#define IN(p, tmp) ((void)0)
#define GET(p, tmp) LD((p)[i])
#define PUT(p, tmp, v) ((p)[i] = ST(v))
#define OUT(p, tmp) ((void)0)
