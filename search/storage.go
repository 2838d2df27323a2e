package search

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/c-bata/goptuna"
	rdb "github.com/c-bata/goptuna/rdb.v2"
	"github.com/glebarez/sqlite"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// Storage is an open study database. Studies are read from it with Summarize and searched
// with Open; goptuna's storage interface stays inside the package.
type Storage struct {
	st   *studyStore
	db   *gorm.DB
	URL  string // as given
	Kind string // "sqlite", "postgres" or "mysql"
}

// studyStore is goptuna's RDB storage with attribute values of any length: values over
// goptuna's varchar(2048) columns are split on writing and joined on reading.
type studyStore struct{ *rdb.Storage }

// Close closes the database connection.
func (s *Storage) Close() error {
	sqlDB, err := s.db.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// OpenStorage opens (creating when needed) the study database at url: a "postgres://" or
// "postgresql://" URL for a PostgreSQL server, or a "mysql://user:password@host:port/db" URL
// for a MySQL or MariaDB server, shared by many workers; otherwise the path of a SQLite file.
// SQLite files are opened in WAL mode with immediate transactions and a busy timeout, so
// several processes on one machine can share a file.
func OpenStorage(url string) (*Storage, error) {
	if !strings.Contains(url, "://") {
		if dir := filepath.Dir(url); dir != "" {
			if _, serr := os.Stat(dir); serr != nil {
				return nil, fmt.Errorf("storage %s: folder %s does not exist", url, dir)
			}
		}
		if err := checkSQLiteFile(url); err != nil {
			return nil, err
		}
	}
	db, kind, err := dial(url, func(path string) (*gorm.DB, error) {
		dsn := path + "?_txlock=immediate&_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
		return gorm.Open(sqlite.Open(dsn), gormConfig())
	})
	if err != nil {
		return nil, err
	}
	if kind == "sqlite" {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.SetMaxOpenConns(1)
		}
	}
	if err := migrate(db); err != nil {
		closeDB(db)
		return nil, fmt.Errorf("storage %s: creating tables: %w", redact(url), err)
	}
	return &Storage{st: &studyStore{rdb.NewStorage(db)}, db: db, URL: url, Kind: kind}, nil
}

func gormConfig() *gorm.Config { return &gorm.Config{Logger: logger.Default.LogMode(logger.Silent)} }

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.Close()
	}
}

// unsupportedScheme is the error for a storage URL that is neither PostgreSQL nor MySQL.
func unsupportedScheme(url string) error {
	return fmt.Errorf("storage %s: unsupported scheme (want a SQLite file path, postgres://... or mysql://...)", redact(url))
}

// isServer tells whether url names a database server dial knows.
func isServer(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://") || strings.HasPrefix(url, "mysql://")
}

// dial connects to the database at url: PostgreSQL or MySQL by scheme, otherwise the
// SQLite file that openSQLite opens.
func dial(url string, openSQLite func(path string) (*gorm.DB, error)) (*gorm.DB, string, error) {
	var (
		db   *gorm.DB
		err  error
		kind string
	)
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		kind = "postgres"
		db, err = gorm.Open(postgres.Open(url), gormConfig())
	case strings.HasPrefix(url, "mysql://"):
		kind = "mysql"
		dsn, derr := mysqlDSN(url)
		if derr != nil {
			return nil, "", fmt.Errorf("storage %s: %w", redact(url), derr)
		}
		db, err = gorm.Open(mysql.Open(dsn), gormConfig())
	case strings.Contains(url, "://"):
		return nil, "", unsupportedScheme(url)
	default:
		kind = "sqlite"
		db, err = openSQLite(url)
	}
	if err != nil {
		return nil, "", fmt.Errorf("storage %s: %w", redact(url), err)
	}
	return db, kind, nil
}

// migrate creates the tables, retrying while another worker does the same.
func migrate(db *gorm.DB) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = rdb.RunAutoMigrate(db); err == nil {
			return nil
		}
		time.Sleep(time.Duration(200*(i+1)) * time.Millisecond)
	}
	return err
}

// checkSQLiteFile refuses an existing file that is not a SQLite database, so a typo in the
// storage path never overwrites, say, a model file.
func checkSQLiteFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, 16)
	n, err := io.ReadFull(f, head)
	if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
		return nil // empty file: SQLite initialises it
	}
	if string(head[:n]) != "SQLite format 3\x00" {
		return fmt.Errorf("storage %s: exists and is not a SQLite database; refusing to touch it", path)
	}
	return nil
}

// mysqlDSN turns mysql://user:password@host:port/db?params into the driver's
// user:password@tcp(host:port)/db?params form; the port defaults to 3306.
func mysqlDSN(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("not a valid URL: %w", err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	if db == "" || strings.Contains(db, "/") {
		return "", errors.New("want mysql://user:password@host:port/database")
	}
	host := u.Host
	if host == "" {
		host = "127.0.0.1"
	}
	if u.Port() == "" {
		host += ":3306"
	}
	q := u.Query()
	if q.Get("parseTime") == "" {
		q.Set("parseTime", "true")
	}
	user := ""
	if u.User != nil {
		user = u.User.Username()
		if pw, ok := u.User.Password(); ok {
			user += ":" + pw
		}
		user += "@"
	}
	return fmt.Sprintf("%stcp(%s)/%s?%s", user, host, db, q.Encode()), nil
}

// redact hides a password in a database URL.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

var _ goptuna.Storage = (*studyStore)(nil)

// OpenExisting opens a study database that must already exist, for reading (reports): a
// missing SQLite file is an error rather than a new, empty database, nothing is created or
// migrated, and a SQLite file is opened read-only, so reading a study never changes it, even
// in a read-only folder.
func OpenExisting(url string) (*Storage, error) {
	if !strings.Contains(url, "://") {
		fi, err := os.Stat(url)
		if err != nil {
			return nil, fmt.Errorf("study database %s: no such file", url)
		}
		if err := checkSQLiteFile(url); err != nil {
			return nil, err
		}
		if fi.Size() == 0 {
			return nil, fmt.Errorf("study database %s: the file is empty, it holds no study", url)
		}
	}
	db, kind, err := dial(url, func(path string) (*gorm.DB, error) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		db, err := gorm.Open(sqlite.Open("file:"+abs+"?mode=ro&_pragma=busy_timeout(20000)&_pragma=query_only(1)"), gormConfig())
		if err == nil && db.Exec("SELECT 1 FROM sqlite_master LIMIT 1").Error != nil {
			// A study in WAL mode in a read-only folder: the reader cannot create the
			// shared-memory file, and nobody can be writing there, so read it as immutable.
			closeDB(db)
			db, err = gorm.Open(sqlite.Open("file:"+abs+"?mode=ro&immutable=1&_pragma=query_only(1)"), gormConfig())
		}
		return db, err
	})
	if err != nil {
		return nil, err
	}
	if !db.Migrator().HasTable("studies") {
		closeDB(db)
		return nil, fmt.Errorf("study database %s: it holds no study (no goptuna tables)", redact(url))
	}
	return &Storage{st: &studyStore{rdb.NewStorage(db)}, db: db, URL: url, Kind: kind}, nil
}

// StudyNames lists the studies in the database.
func (s *Storage) StudyNames() ([]string, error) {
	all, err := s.st.GetAllStudySummaries()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(all))
	for i, st := range all {
		names[i] = st.Name
	}
	return names, nil
}

// Attribute values are stored in goptuna's tables, whose value column is varchar(2048) on
// PostgreSQL and MySQL. A longer value (the groups of a large model, a config path, a
// trial's metrics) is split: the key holds chunkMarker and the number of parts, the parts
// go under KEY + chunkSep + index, each at most chunkRunes characters. Reading joins them
// back; the split is invisible above Storage.
const (
	chunkRunes  = 1800
	chunkMarker = "@chunks:"
	chunkSep    = "@part"
)

// split cuts a long value into the attributes that store it, at character boundaries.
func split(key, value string) [][2]string {
	if utf8.RuneCountInString(value) <= chunkRunes && !strings.HasPrefix(value, chunkMarker) {
		return [][2]string{{key, value}}
	}
	var parts []string
	for len(value) > 0 {
		n, i := 0, 0
		for i < len(value) && n < chunkRunes {
			_, size := utf8.DecodeRuneInString(value[i:])
			i += size
			n++
		}
		parts = append(parts, value[:i])
		value = value[i:]
	}
	out := make([][2]string, 0, len(parts)+1)
	for i, p := range parts {
		out = append(out, [2]string{key + chunkSep + strconv.Itoa(i), p})
	}
	// The marker is written last, so a reader never sees it before its parts.
	return append(out, [2]string{key, chunkMarker + strconv.Itoa(len(parts))})
}

// join reassembles split values in an attribute map, in place.
func join(attrs map[string]string) map[string]string {
	for k, v := range attrs {
		n, err := strconv.Atoi(strings.TrimPrefix(v, chunkMarker))
		if !strings.HasPrefix(v, chunkMarker) || err != nil || n <= 0 || n > 1<<20 {
			continue
		}
		var b strings.Builder
		complete := true
		for i := 0; i < n; i++ {
			p, ok := attrs[k+chunkSep+strconv.Itoa(i)]
			if !ok {
				complete = false
				break
			}
			b.WriteString(p)
		}
		if complete {
			attrs[k] = b.String()
		}
	}
	for k := range attrs {
		if strings.Contains(k, chunkSep) {
			delete(attrs, k)
		}
	}
	return attrs
}

// SetStudyUserAttr stores a study attribute of any length.
func (s *studyStore) SetStudyUserAttr(studyID int, key, value string) error {
	for _, a := range split(key, value) {
		if err := s.Storage.SetStudyUserAttr(studyID, a[0], a[1]); err != nil {
			return err
		}
	}
	return nil
}

// SetTrialUserAttr stores a trial attribute of any length.
func (s *studyStore) SetTrialUserAttr(trialID int, key, value string) error {
	for _, a := range split(key, value) {
		if err := s.Storage.SetTrialUserAttr(trialID, a[0], a[1]); err != nil {
			return err
		}
	}
	return nil
}

// GetStudyUserAttrs returns a study's attributes, long ones joined.
func (s *studyStore) GetStudyUserAttrs(studyID int) (map[string]string, error) {
	a, err := s.Storage.GetStudyUserAttrs(studyID)
	return join(a), err
}

// GetTrialUserAttrs returns a trial's attributes, long ones joined.
func (s *studyStore) GetTrialUserAttrs(trialID int) (map[string]string, error) {
	a, err := s.Storage.GetTrialUserAttrs(trialID)
	return join(a), err
}

// GetTrial returns a trial, its long attributes joined.
func (s *studyStore) GetTrial(trialID int) (goptuna.FrozenTrial, error) {
	t, err := s.Storage.GetTrial(trialID)
	t.UserAttrs = join(t.UserAttrs)
	return t, err
}

// GetAllTrials returns a study's trials, their long attributes joined.
func (s *studyStore) GetAllTrials(studyID int) ([]goptuna.FrozenTrial, error) {
	ts, err := s.Storage.GetAllTrials(studyID)
	for i := range ts {
		ts[i].UserAttrs = join(ts[i].UserAttrs)
	}
	return ts, err
}

// GetBestTrial returns the best trial, its long attributes joined.
func (s *studyStore) GetBestTrial(studyID int) (goptuna.FrozenTrial, error) {
	t, err := s.Storage.GetBestTrial(studyID)
	t.UserAttrs = join(t.UserAttrs)
	return t, err
}

// Source names the database for people: the SQLite path, or the URL with its password
// hidden.
func (s *Storage) Source() string { return redact(s.URL) }
