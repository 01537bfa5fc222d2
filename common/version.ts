// Versions this build reports: marsd's and marsadm's (--version, actual-HOST/marsd-version) and
// the version of the /mars tree layout it writes (actual-HOST/tree).
export const MARSD_VERSION = '0.1.0';
export const TREE_VERSION = '0.1';
