"""gradnorm's version, in one place: the library's gn_version(), the Python
package's __version__, the wheel's name, the coordinator's and gradnormctl's
--version and the gradnorm_build_info metric all come from here."""

GRADNORM_VERSION = "0.4.0"

# For cc_library/cc_binary local_defines: GRADNORM_VERSION as a C string.
GRADNORM_VERSION_DEFINE = 'GRADNORM_VERSION=\\"%s\\"' % GRADNORM_VERSION
