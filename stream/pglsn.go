package stream

import (
	"context"
	"database/sql/driver"
	"encoding/binary"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// pgLSNOID is the OID of Postgres's pg_lsn type.
const pgLSNOID = 3220

// lsnCodec teaches pgx pg_lsn in both formats: COPY and the extended
// protocol use binary, where pg_lsn is a big-endian uint64.
type lsnCodec struct{}

func (lsnCodec) FormatSupported(f int16) bool {
	return f == pgtype.BinaryFormatCode || f == pgtype.TextFormatCode
}
func (lsnCodec) PreferredFormat() int16 { return pgtype.BinaryFormatCode }

func (lsnCodec) PlanEncode(_ *pgtype.Map, _ uint32, format int16, value any) pgtype.EncodePlan {
	switch value.(type) {
	case pglogrepl.LSN, uint64:
		if format == pgtype.BinaryFormatCode {
			return lsnBinEncode{}
		}
		return lsnTextEncode{}
	}
	return nil
}

func lsnOf(v any) pglogrepl.LSN {
	switch x := v.(type) {
	case pglogrepl.LSN:
		return x
	case uint64:
		return pglogrepl.LSN(x)
	}
	return 0
}

type lsnBinEncode struct{}

func (lsnBinEncode) Encode(v any, buf []byte) ([]byte, error) {
	return binary.BigEndian.AppendUint64(buf, uint64(lsnOf(v))), nil
}

type lsnTextEncode struct{}

func (lsnTextEncode) Encode(v any, buf []byte) ([]byte, error) {
	return append(buf, lsnOf(v).String()...), nil
}

func (lsnCodec) PlanScan(_ *pgtype.Map, _ uint32, format int16, target any) pgtype.ScanPlan {
	switch target.(type) {
	case *pglogrepl.LSN, *string:
		return lsnScan{format}
	}
	return nil
}

type lsnScan struct{ format int16 }

func (p lsnScan) Scan(src []byte, dst any) error {
	if src == nil {
		return fmt.Errorf("pg_lsn: cannot scan NULL")
	}
	var l pglogrepl.LSN
	if p.format == pgtype.BinaryFormatCode {
		if len(src) != 8 {
			return fmt.Errorf("pg_lsn: want 8 bytes, got %d", len(src))
		}
		l = pglogrepl.LSN(binary.BigEndian.Uint64(src))
	} else {
		var err error
		if l, err = pglogrepl.ParseLSN(string(src)); err != nil {
			return err
		}
	}
	switch d := dst.(type) {
	case *pglogrepl.LSN:
		*d = l
	case *string:
		*d = l.String()
	}
	return nil
}

func (c lsnCodec) DecodeDatabaseSQLValue(_ *pgtype.Map, _ uint32, format int16, src []byte) (driver.Value, error) {
	if src == nil {
		return nil, nil
	}
	var s string
	err := lsnScan{format}.Scan(src, &s)
	return s, err
}

func (c lsnCodec) DecodeValue(_ *pgtype.Map, _ uint32, format int16, src []byte) (any, error) {
	if src == nil {
		return nil, nil
	}
	var l pglogrepl.LSN
	err := lsnScan{format}.Scan(src, &l)
	return l, err
}

// RegisterTypes teaches a connection the types the store uses; use it as
// pgxpool.Config.AfterConnect.
func RegisterTypes(_ context.Context, conn *pgx.Conn) error {
	conn.TypeMap().RegisterType(&pgtype.Type{Name: "pg_lsn", OID: pgLSNOID, Codec: lsnCodec{}})
	return nil
}
