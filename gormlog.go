package dogpile

import (
	"reflect"

	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// GORM's log line of a cached query. With GORM's logger at Info (db.Debug(),
// or a logger made with LogLevel: logger.Info), the SQL of a query answered
// from the cache is printed after a comment saying how:
//
//	[0.120ms] [rows:1] /* dogpile: hit */ SELECT * FROM `users` WHERE `users`.`id` = 42 ...
//
// with "hit", "stale hit" or "waited" (Outcome.String). A miss, a bypassed
// query and a query not cached are printed as GORM prints them. The SQL is
// marked in the statement after the answer was served from the cache, when
// the query has been answered and nothing is sent to the database any more;
// GORM prints it, then resets it, as it does after every statement. So
// GORM's own logger prints the line with the caller's file and line, as for
// any query (a logger wrapping it would show its own), and nothing changes
// what is executed. The plugin knows the level of GORM's own logger
// (logger.New, logger.Default and what their LogMode returns); the lines of
// another logger.Interface are not marked.

// logLinePrefix returns the comment before the SQL of a query served as o.
func logLinePrefix(o Outcome) string { return "/* dogpile: " + o.String() + " */ " }

// markLogLine puts the comment saying o before the SQL of db's statement
// when GORM's logger prints the SQL of every statement.
func markLogLine(db *gorm.DB, o Outcome) {
	if !loggerAtInfo(db.Logger) || db.Statement.SQL.Len() == 0 {
		return
	}
	sql := db.Statement.SQL.String()
	db.Statement.SQL.Reset()
	db.Statement.SQL.WriteString(logLinePrefix(o))
	db.Statement.SQL.WriteString(sql)
}

// gormLogger is the type of GORM's own logger, and levelField the index of
// its LogLevel (of its embedded logger.Config).
var gormLogger, levelField = func() (reflect.Type, []int) {
	t := reflect.TypeOf(logger.New(nil, logger.Config{}))
	f, ok := t.Elem().FieldByName("LogLevel")
	if !ok || f.Type != reflect.TypeOf(logger.Info) {
		return nil, nil // a GORM without the field: no line is marked
	}
	return t, f.Index
}()

// loggerAtInfo reports whether l is GORM's own logger at Info or more: a
// type comparison for any other logger, and a field read for that one.
func loggerAtInfo(l logger.Interface) bool {
	if l == nil || gormLogger == nil || reflect.TypeOf(l) != gormLogger {
		return false
	}
	v := reflect.ValueOf(l)
	if v.IsNil() {
		return false
	}
	return logger.LogLevel(v.Elem().FieldByIndex(levelField).Int()) >= logger.Info
}
