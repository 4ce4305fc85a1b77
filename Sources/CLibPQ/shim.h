// PostgreSQL's own client library (libpq-dev): the PostgreSQL store's connection, TLS through the
// system's OpenSSL.
#include <libpq-fe.h>
